# The commands of the README: `make demo` (and `make demo-sitecheck`, `make demo-protest`) and `make test`. All set up a fresh machine first.
.PHONY: setup demo demo-sitecheck demo-protest test lint bench explore

setup:
	./scripts/setup.sh

# The demo: the Kazakhstan-2019 network measured in the testbed, then the pipeline over those
# measurements and three weeks of generated OONI-format data around 5 January 2022 (when
# Kazakhstan cut off and then filtered its Internet during the protests), a query for the
# sudden onsets of blocking and an HTML report. Everything it writes goes to demo-output/.
DEMO := demo-output
demo: setup
	rm -rf $(DEMO)/collector
	.venv/bin/netvigil testbed demo --profile kz-2019-interception --save $(DEMO)/testbed-kz-2019.jsonl
	rm -rf $(DEMO)/ooni
	.venv/bin/netvigil pipeline generate --out $(DEMO)/ooni --count 12000 --days 21 \
	  --start 2021-12-27 --seed 2022 --country KZ:AS9198,AS206026 --domains 40 -j 2 \
	  --event KZ:9:facebook.com,cdninstagram.com,docs.google.com,hidemy.name:tls
# The testbed's measurements from the collector's log the demo kept (their ids are then the
# log's, so `make explore` shows each one's proof), else from the saved file.
	.venv/bin/netvigil pipeline run $(DEMO)/ooni \
	  $$(test -f $(DEMO)/collector/collector.sqlite3 && echo $(DEMO)/collector/collector.sqlite3 || echo $(DEMO)/testbed-kz-2019.jsonl) \
	  --out $(DEMO)/pipeline --overwrite
	.venv/bin/netvigil query $(DEMO)/pipeline --cc KZ --since $$(date -u +%F) --limit 12
	.venv/bin/netvigil query $(DEMO)/pipeline --cc KZ --what events --limit 12
	.venv/bin/netvigil report $(DEMO)/pipeline --cc KZ --until 2022-01-16 --html $(DEMO)/report.html \
	  --title "Kazakhstan, 27 December 2021 - 16 January 2022 (generated from real and testbed measurements)"
	@echo "Browse it: make explore  (netvigil explorer $(DEMO)/pipeline, at http://127.0.0.1:8080/)"

# The protest-day demo: Kazakhstan, January 2022, compressed to about six minutes. A probe
# scheduled every 10 s from 'client' (netvigil schedule's loop, web and messaging apps) while
# the censor restricts the messaging apps, shuts the network down, opens filtered windows and
# restores it; the outbox keeps what the shutdown stops; then the pipeline over the collector's
# log and a report of the timeline with the onsets found by the event rule
# (demo-output/protest/report.html).
demo-protest: setup
	rm -rf $(DEMO)/protest
	.venv/bin/netvigil testbed demo --profile kz-2022-january --save $(DEMO)/protest

# Site-side detection with real browsers: headless Chromium and Firefox ESR in the testbed's
# client visit sites served behind `netvigil sitecheck front`, on the intercepting network and on
# a clean one; each visit's verdict is printed next to what the censor did (~40 s).
demo-sitecheck: setup
	.venv/bin/netvigil testbed browse -p kz-2019-interception --browser chromium,firefox
	.venv/bin/netvigil testbed browse -p clean --browser chromium,firefox

# The explorer on the demo's output (run `make demo` first): http://127.0.0.1:8080/
explore: setup
	@test -d $(DEMO)/pipeline || { echo "no $(DEMO)/pipeline: run 'make demo' first" >&2; exit 1; }
	.venv/bin/netvigil explorer $(DEMO)/pipeline --inputs $(DEMO)/ooni --inputs $(DEMO)/testbed-kz-2019.jsonl \
	  $$(test -f $(DEMO)/collector/collector.sqlite3 && echo --collector-data $(DEMO)/collector)

lint: setup
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/ruff format --check src tests benchmarks
	.venv/bin/mypy

test: lint
	.venv/bin/pytest

bench: setup
	.venv/bin/python benchmarks/bench_testbed_up.py
	.venv/bin/python benchmarks/bench_probe.py
	.venv/bin/python benchmarks/bench_fingerprints.py
	.venv/bin/python benchmarks/bench_verdict.py
	.venv/bin/python benchmarks/bench_merkle.py
	.venv/bin/python benchmarks/bench_collector.py
	.venv/bin/python benchmarks/bench_collector_crash.py
	.venv/bin/python benchmarks/bench_pipeline.py
	.venv/bin/python benchmarks/bench_explorer.py
	.venv/bin/python benchmarks/bench_sitecheck.py
	.venv/bin/python benchmarks/bench_sitecheck_front.py
