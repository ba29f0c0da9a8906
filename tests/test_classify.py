"""Classification: normalisation, templates, rule matching, and the order of decisions."""

from dataclasses import dataclass, field

import pytest

from balancer.classify import Classifier, glob_to_regex, normalize_path, path_template, query_keys
from balancer.config import parse_config
from balancer.costs import CostModel
from balancer.routing_config import Learning, RoutingConfig


@dataclass
class Facts:
    method: str = "GET"
    path: str = "/"
    query: str = ""
    content_length: int | None = None
    host_value: str = "shop.example"
    ctype: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def host(self) -> str:
        return self.host_value

    def content_type(self) -> str:
        return self.ctype

    def header(self, name: str) -> str | None:
        return {k.lower(): v for k, v in self.headers.items()}.get(name.lower())


@pytest.mark.parametrize(("raw", "normal"), [
    ("/api/../process/x", "/process/x"),
    ("/a/./b/../c", "/a/c"),
    ("//api///items", "/api/items"),
    ("/%61pi/items", "/api/items"),          # unreserved escapes decoded
    ("/a%2fb", "/a%2Fb"),                   # reserved ones kept (hex upper-cased)
    ("/%2E%2E/etc", "/etc"),                # encoded dot segments too
    ("/a/b/..", "/a/"),
    ("/..", "/"),
    ("relative", "/relative"),
    ("/", "/"),
])
def test_normalize_path(raw: str, normal: str) -> None:
    assert normalize_path(raw) == normal
    assert normalize_path(normal) == normal  # idempotent


@pytest.mark.parametrize(("path", "template"), [
    ("/user/42", "/user/{n}"),
    ("/order/9f86d081884c7d65/items/3", "/order/{hash}/items/{n}"),
    ("/doc/123e4567-e89b-12d3-a456-426614174000", "/doc/{uuid}"),
    ("/file/aB3dE6gH9jK2mN5pQ8rS1", "/file/{id}"),
    ("/api/items", "/api/items"),
    ("/v2/page", "/v2/page"),
])
def test_path_template(path: str, template: str) -> None:
    assert path_template(path) == template


def test_query_keys_not_values() -> None:
    assert query_keys("b=2&a=1&b=3") == "?a&b"
    assert query_keys("") == ""


@pytest.mark.parametrize(("glob", "path", "hit"), [
    ("/api/**", "/api/items/7", True),
    ("/api/**", "/api", True),
    ("/api/**", "/apix", False),
    ("/api/*", "/api/items", True),
    ("/api/*", "/api/items/7", False),
    ("/*/render", "/shop/render", True),
    ("/img/?.png", "/img/a.png", True),
])
def test_globs(glob: str, path: str, hit: bool) -> None:
    import re
    assert (re.match(glob_to_regex(glob), path) is not None) is hit


def classifier(rules: str, learning: str = "") -> tuple[Classifier, CostModel]:
    config = parse_config(f"""\
listen: 127.0.0.1:0
pools:
  io: {{backends: [http://127.0.0.1:1]}}
  light: {{backends: [http://127.0.0.1:2]}}
  heavy: {{backends: [http://127.0.0.1:3]}}
routing:
  cpu_threshold: 100ms
  io_threshold: 0.5
  classes: {{io: io, light_cpu: light, heavy_cpu: heavy}}
  default_class: light_cpu
  {learning}
  rules:
{rules}
""")
    routing = config.routing
    assert routing is not None
    return Classifier(routing), CostModel(routing.learning, cpu_threshold_ms=100,
                                          io_threshold=0.5)


RULES = """\
    - {path: "/api/**", class: io}
    - {path: "/render/**", class: light_cpu}
    - {path: "/process/**", methods: [POST], class: heavy_cpu}
    - {path_regex: "^/report/\\\\d+$", cpu_ms: 300}
    - {path: "/upload", content_type: "image/*", body_size: {min: 1KiB}, class: heavy_cpu}
    - {path: "/vip/**", headers: {X-Tier: gold}, class: io}
    - {host: "*.internal", class: io}
    - {path: "/pinned", class: light_cpu, pin: true}
"""


@pytest.mark.parametrize(("facts", "expected", "rule"), [
    (Facts(path="/api/items", query="id=7"), "io", 0),
    (Facts(path="/api/../process/x", method="POST"), "heavy_cpu", 2),  # normalised first
    (Facts(path="/process/x", method="GET"), "light_cpu", None),        # methods: POST only
    (Facts(path="/render/page"), "light_cpu", 1),
    (Facts(path="/report/12"), "heavy_cpu", 3),                          # cost hint 300 ms
    (Facts(path="/upload", method="PUT", ctype="image/png", content_length=4096), "heavy_cpu", 4),
    (Facts(path="/upload", method="PUT", ctype="text/plain", content_length=4096), "light_cpu",
     None),
    (Facts(path="/vip/a", headers={"X-Tier": "gold"}), "io", 5),
    (Facts(path="/vip/a", headers={"X-Tier": "tin"}), "light_cpu", None),
    (Facts(path="/x", host_value="db.internal:8080"), "io", 6),
])
def test_rules_first_match_wins(facts: Facts, expected: str, rule: int | None) -> None:
    classify, costs = classifier(RULES)
    decision = classify.classify(facts, costs)
    assert (decision.request_class, decision.rule) == (expected, rule)
    assert decision.source == ("rule" if rule is not None else "default")


def test_request_facts_decide_for_routes_with_no_rule_and_no_history() -> None:
    classify, costs = classifier("    - {path: /never, class: io}")
    upload = Facts(path="/thumbs", method="POST", ctype="image/jpeg", content_length=300_000)
    assert classify.classify(upload, costs).request_class == "heavy_cpu"
    small_json = Facts(path="/thumbs", method="POST", ctype="application/json", content_length=90)
    assert classify.classify(small_json, costs).request_class == "light_cpu"
    assert classify.classify(Facts(path="/anything"), costs).source == "default"


def test_learned_cost_overrides_an_unpinned_rule_once_confident_but_not_a_pinned_one() -> None:
    classify, costs = classifier(RULES)
    render = Facts(path="/render/page", query="name=x")
    pinned = Facts(path="/pinned")
    for sample in range(5):
        decision = classify.classify(render, costs)
        assert decision.source == "rule"  # not confident yet (min_samples is 5)
        costs.observe(decision.template, cpu_ms=250, wall_ms=260, now=float(sample))
        costs.observe(classify.classify(pinned, costs).template, 250, 260, float(sample))
    decision = classify.classify(render, costs)
    assert (decision.request_class, decision.source) == ("heavy_cpu", "learned")
    assert decision.template == "GET /render/page?name"
    assert decision.score == pytest.approx(2.5)
    pinned_decision = classify.classify(pinned, costs)
    assert (pinned_decision.request_class, pinned_decision.source) == ("light_cpu", "rule")


def test_fifty_rules_cost_one_lookup_per_route_after_the_first() -> None:
    rules = "\n".join(f'    - {{path: "/r{i}/**", class: io}}' for i in range(50))
    classify, costs = classifier(rules)
    facts = Facts(path="/r49/x")
    assert classify.classify(facts, costs).rule == 49
    assert repr(classify) == "<Classifier 50 rules, 1 routes cached>"
    assert classify.classify(facts, costs).rule == 49
    assert repr(classify) == "<Classifier 50 rules, 1 routes cached>"


def test_classifier_never_raises_on_odd_paths() -> None:
    classify, costs = classifier(RULES)
    for path in ["", "%", "%zz", "/%ff%00", "/../../..", "//", "/" + "a/" * 500, "/\u00e9"]:
        classify.classify(Facts(path=path), costs)


def test_routing_config_defaults() -> None:
    routing = RoutingConfig(classes=(("light_cpu", "light"),))
    assert routing.pool_for("heavy_cpu") == "light"  # unmapped class: the default's pool
    assert Learning().min_samples == 5


# -- exact decisions: what each source scores, and the edges of each rule condition -------------

EDGE_RULES = """\
    - {path: "/io", class: io}
    - {path: "/light", class: light_cpu}
    - {path: "/heavy", class: heavy_cpu}
    - {path: "/at-threshold", cpu_ms: 100ms}
    - {path: "/below-threshold", cpu_ms: 50ms}
    - {path: "/io-hint", io_ratio: 0.5}
    - {path: "/csv", content_type: "text/csv", class: io}
    - {path: "/sized", body_size: {min: 1KiB, max: 2KiB}, class: heavy_cpu}
    - {path: "/small", body_size: {max: 1KiB}, class: io}
    - {path: "/some", body_size: {min: 1}, class: io}
"""


@pytest.mark.parametrize(("facts", "expected"), [
    (Facts(path="/io"), ("io", "rule", 0.0, "GET /io", 0)),
    (Facts(path="/light"), ("light_cpu", "rule", 0.5, "GET /light", 1)),
    (Facts(path="/heavy", query="a=1"), ("heavy_cpu", "rule", 1.0, "GET /heavy?a", 2)),
    (Facts(path="/at-threshold"), ("heavy_cpu", "rule", 1.0, "GET /at-threshold", 3)),
    (Facts(path="/below-threshold"), ("light_cpu", "rule", 0.5, "GET /below-threshold", 4)),
    (Facts(path="/io-hint"), ("io", "rule", 0.0, "GET /io-hint", 5)),
    (Facts(path="/csv", ctype="text/csv; charset=utf-8"), ("io", "rule", 0.0, "GET /csv", 6)),
    (Facts(path="/sized", method="PUT", content_length=1024),
     ("heavy_cpu", "rule", 1.0, "PUT /sized", 7)),
    (Facts(path="/sized", method="PUT", content_length=2048),
     ("heavy_cpu", "rule", 1.0, "PUT /sized", 7)),
    (Facts(path="/sized", method="PUT", content_length=1023),
     ("light_cpu", "default", 0.3, "PUT /sized", None)),
    (Facts(path="/small", method="PUT", content_length=4096, ctype="text/plain"),
     ("light_cpu", "default", 0.301, "PUT /small", None)),
    (Facts(path="/some"), ("light_cpu", "default", 0.1, "GET /some", None)),
    # no rule: the request's own facts
    (Facts(path="/x", method="HEAD"), ("light_cpu", "default", 0.1, "HEAD /x", None)),
    (Facts(path="/x", method="OPTIONS"), ("light_cpu", "default", 0.1, "OPTIONS /x", None)),
    (Facts(path="/x", method="DELETE"), ("light_cpu", "default", 0.3, "DELETE /x", None)),
    (Facts(path="/x", method="POST", ctype="application/json", content_length=100_000),
     ("light_cpu", "default", 0.329, "POST /x", None)),
    (Facts(path="/x", method="POST", ctype="application/json", content_length=2 * 2**20),
     ("light_cpu", "default", 0.6, "POST /x", None)),
    (Facts(path="/x", method="POST", ctype="Image/PNG", content_length=2**19),
     ("heavy_cpu", "default", 0.95, "POST /x", None)),
])
def test_each_decision_in_full(facts: Facts, expected: tuple[object, ...]) -> None:
    classify, costs = classifier(EDGE_RULES)
    decision = classify.classify(facts, costs)
    got = (decision.request_class, decision.source, decision.score, decision.template,
           decision.rule)
    assert got == pytest.approx(expected), got
    assert classify.classify(facts, None).request_class == decision.request_class


def test_a_learned_decision_names_the_rule_it_overrode() -> None:
    classify, costs = classifier(RULES)
    for sample in range(5):
        costs.observe("GET /render/page", cpu_ms=250, wall_ms=260, now=float(sample))
        costs.observe("GET /elsewhere", cpu_ms=250, wall_ms=260, now=float(sample))
    assert classify.classify(Facts(path="/render/page"), costs).rule == 1
    decision = classify.classify(Facts(path="/elsewhere"), costs)
    assert (decision.source, decision.rule) == ("learned", None)


def test_routes_are_looked_up_once_and_the_cache_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import balancer.classify as module

    calls = []
    real = module.normalize_path
    monkeypatch.setattr(module, "normalize_path", lambda p: calls.append(p) or real(p))
    classify, costs = classifier(RULES)
    for _ in range(3):
        classify.classify(Facts(path="/api/x"), costs)
    assert calls == ["/api/x"]
    for i in range(module.CACHE_SIZE - 1):  # with /api/x: exactly full
        classify.classify(Facts(path=f"/n{i}"), costs)
    assert repr(classify) == f"<Classifier 8 rules, {module.CACHE_SIZE} routes cached>"
    classify.classify(Facts(path="/one-more"), costs)
    assert repr(classify) == "<Classifier 8 rules, 1 routes cached>"


@pytest.mark.parametrize(("raw", "normal"), [
    ("/a%zz", "/a%25zz"),      # a stray % is escaped
    ("/a/b/.", "/a/b/"),
])
def test_normalize_path_edges(raw: str, normal: str) -> None:
    assert normalize_path(raw) == normal


def test_query_keys_split_at_the_first_equals_sign() -> None:
    assert query_keys("a=b=c") == "?a"
    assert query_keys("a=b=c&d=1") == "?a&d"


@pytest.mark.parametrize(("glob", "path", "hit"), [
    ("/a/**/b", "/a/x/y/b", True),
    ("/a/**/b", "/a/xb", False),
    ("**/b", "/x/y/b", True),
])
def test_double_star_in_the_middle(glob: str, path: str, hit: bool) -> None:
    import re
    assert (re.match(glob_to_regex(glob), path) is not None) is hit
