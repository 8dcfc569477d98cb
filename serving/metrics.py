"""The endpoint's own metrics, exported through Ray's Prometheus endpoint (``ray.serve.metrics``).

Ray adds the ``ray_`` prefix and the deployment, replica and application tags; scrape every Ray
pod's metrics port (8080 by default; ``cluster/podmonitor.yaml``). Serve's built-in metrics
(request counts, proxy latencies, queue lengths, autoscaling) come from the same endpoint.

    ray_persona_search_latency_ms{route}            histogram: time in the ingress per search route
    ray_persona_search_hits_total{route}            counter: hits returned
    ray_persona_search_requests_total{route}        counter: searches answered with 200
    ray_persona_search_shed_total{reason}           counter: searches answered 503 by the app
                                                    (the proxy's own 503s past max_queued_requests
                                                    are Serve's ray_serve_num_http_error_requests)
    ray_persona_search_encoder_batch_size           histogram: texts encoded per encoder call
                                                    (cache misses; the batching that makes CPU go far)
    ray_persona_search_query_cache_hits_total       counter: persona embeddings served from the LRU
    ray_persona_search_index_info{index_version,layout}   gauge: 1 for the version a replica serves
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Gauge, Histogram

LATENCY_MS = [1, 2, 5, 10, 20, 35, 50, 75, 100, 200, 500, 1000, 2000, 5000]
BATCH = [1, 2, 4, 8, 16, 32, 64, 128, 256]


class SearchMetrics:
    """One set per replica (metric objects are cheap; Ray aggregates them per tag set)."""

    def __init__(self, index_version: str, layout: str):
        self.latency = Histogram("persona_search_latency_ms", description="time in the ingress per search (ms)",
                                 boundaries=LATENCY_MS, tag_keys=("route",))
        self.hits = Counter("persona_search_hits_total", description="hits returned", tag_keys=("route",))
        self.requests = Counter("persona_search_requests_total", description="searches answered",
                                tag_keys=("route",))
        self.shed = Counter("persona_search_shed_total", description="searches answered 503 by the app",
                            tag_keys=("reason",))
        self.batch = Histogram("persona_search_encoder_batch_size", description="texts encoded per encoder call",
                               boundaries=BATCH)
        self.cache_hits = Counter("persona_search_query_cache_hits_total",
                                  description="persona embeddings served from the query cache")
        self.index = Gauge("persona_search_index_info", description="1 for the index version this replica serves",
                           tag_keys=("index_version", "layout"))
        self.index.set(1, tags={"index_version": index_version, "layout": layout})

    def observe(self, route: str, ms: float, hits: int) -> None:
        tags = {"route": route}
        self.latency.observe(ms, tags=tags)
        self.requests.inc(1, tags=tags)
        if hits:
            self.hits.inc(hits, tags=tags)

    def encoded(self, encoded: int, asked: int) -> None:
        if encoded:
            self.batch.observe(encoded)
        if asked > encoded:
            self.cache_hits.inc(asked - encoded)

    def shed_one(self, reason: str) -> None:
        self.shed.inc(1, tags={"reason": reason})
