"""``netvigil explorer``: the pipeline's output and the collector's evidence in a browser."""
