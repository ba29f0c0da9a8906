"""Classification: normalisation, templates, rule matching, and the order of decisions."""

from dataclasses import dataclass, field

import pytest

from balancer.balancing.classify import (
    BadTarget,
    Classifier,
    glob_to_regex,
    path_template,
    query_keys,
)
from balancer.balancing.costs import CostModel
from balancer.config.parse import parse_config
from balancer.config.routing import Learning, RoutingConfig
from balancer.config.yamltree import ConfigError


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
  gpu: {{backends: [http://127.0.0.1:4]}}
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
    (Facts(path="/%70rocess/x", method="POST"), "heavy_cpu", 2),       # escapes decoded first
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


def teach(classify: Classifier, costs: CostModel, facts: Facts, cpu_ms: float, io_ms: float,
          times: int) -> None:
    for sample in range(times):
        template = classify.classify(facts, costs).template
        costs.observe(template, cpu_ms, cpu_ms + io_ms, float(sample), io_ms=io_ms)


def test_one_heavy_report_escalates_an_unpinned_cheap_rule_but_not_a_pinned_one() -> None:
    classify, costs = classifier(RULES)
    render = Facts(path="/render/page", query="name=x")
    pinned = Facts(path="/pinned")
    assert classify.classify(render, costs).source == "rule"
    teach(classify, costs, render, cpu_ms=250, io_ms=0, times=1)
    teach(classify, costs, pinned, cpu_ms=250, io_ms=0, times=1)
    decision = classify.classify(render, costs)
    assert (decision.request_class, decision.source) == ("heavy_cpu", "learned-escalation")
    assert decision.template == "GET /render/page?name" and decision.rule == 1
    assert decision.score == pytest.approx(2.5)
    pinned_decision = classify.classify(pinned, costs)
    assert (pinned_decision.request_class, pinned_decision.source) == ("light_cpu", "rule")


@pytest.mark.parametrize(("facts", "cpu_ms", "io_ms", "ruled"), [
    (Facts(path="/api/items"), 2.0, 0.0, "io"),            # learned light_cpu: stays io
    (Facts(path="/render/page"), 1.0, 20.0, "light_cpu"),  # learned io: stays light_cpu
    (Facts(path="/process/x", method="POST"), 1.0, 0.0, "heavy_cpu"),  # learned cheap: stays
])
def test_learning_never_moves_a_route_against_its_rule_except_to_isolate_cpu(
    facts: Facts, cpu_ms: float, io_ms: float, ruled: str,
) -> None:
    classify, costs = classifier(RULES)
    teach(classify, costs, facts, cpu_ms, io_ms, times=30)
    learned = costs.lookup(classify.classify(facts, costs).template)
    assert learned is not None and costs.decides(learned) and learned.learned_class != ruled
    decision = classify.classify(facts, costs)
    assert (decision.request_class, decision.source) == (ruled, "rule")


def test_with_no_rule_the_learned_class_decides_once_stable() -> None:
    classify, costs = classifier("    - {path: /never, class: io}")
    query = Facts(path="/db/query", query="user=3")
    teach(classify, costs, query, cpu_ms=1.0, io_ms=20.0, times=4)
    assert classify.classify(query, costs).source == "default"
    teach(classify, costs, query, cpu_ms=1.0, io_ms=20.0, times=1)
    decision = classify.classify(query, costs)
    assert (decision.request_class, decision.source) == ("io", "learned")


def test_a_rule_may_send_requests_to_any_pool_and_an_escalation_still_goes_heavy() -> None:
    classify, costs = classifier(RULES.replace('- {path: "/api/**", class: io}',
                                               '- {path: "/infer/**", pool: gpu}'))
    infer = Facts(path="/infer/model", method="POST")
    decision = classify.classify(infer, costs)
    assert (decision.pool, decision.request_class, decision.source) == ("gpu", "light_cpu", "rule")
    teach(classify, costs, infer, cpu_ms=400, io_ms=0, times=1)
    decision = classify.classify(infer, costs)
    assert (decision.pool, decision.request_class, decision.source) == (
        None, "heavy_cpu", "learned-escalation")


def test_a_rule_naming_an_unknown_pool_is_a_located_error() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config("""listen: 127.0.0.1:0
pools: {a: {backends: [http://127.0.0.1:1]}}
routing:
  classes: {light_cpu: a}
  rules: [{path: /x, pool: gpu}]
""", "lb.yaml")
    expected = "lb.yaml:5:28: routing.rules[0].pool: no pool named 'gpu' (defined: a)"
    assert expected in str(error.value)


def test_cpu_threshold_is_auto_unless_written() -> None:
    base = """listen: 127.0.0.1:0
pools: {a: {backends: [http://127.0.0.1:1]}}
routing:
  classes: {light_cpu: a}
"""
    for extra, expected in [("", None), ("  cpu_threshold: auto\n", None),
                            ("  cpu_threshold: 20ms\n", 20.0)]:
        routing = parse_config(base + extra).routing
        assert routing is not None and routing.cpu_threshold_ms == expected
    hinted = parse_config(base + "  rules: [{path: /r, cpu_ms: 30}]\n").routing
    assert hinted is not None
    classify = Classifier(hinted)
    costs = CostModel(hinted.learning, cpu_threshold_ms=None, io_threshold=0.5)
    assert classify.classify(Facts(path="/r"), costs).request_class == "heavy_cpu"  # 30 >= 10


def test_fifty_rules_cost_one_lookup_per_route_after_the_first() -> None:
    rules = "\n".join(f'    - {{path: "/r{i}/**", class: io}}' for i in range(50))
    classify, costs = classifier(rules)
    facts = Facts(path="/r49/x")
    assert classify.classify(facts, costs).rule == 49
    assert repr(classify) == "<Classifier 50 rules, 1 routes cached>"
    assert classify.classify(facts, costs).rule == 49
    assert repr(classify) == "<Classifier 50 rules, 1 routes cached>"


def test_classifier_refuses_odd_paths_with_bad_target_only() -> None:
    classify, costs = classifier(RULES)
    for path in ["", "%", "%zz", "/%ff%00", "/../../..", "//", "/\u00e9"]:
        with pytest.raises(BadTarget):
            classify.classify(Facts(path=path), costs)
    assert classify.classify(Facts(path="/" + "a/" * 500), costs).request_class == "light_cpu"


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
    import balancer.balancing.classify as module

    calls = []
    real = module.routed_path
    monkeypatch.setattr(module, "routed_path", lambda p, mode: calls.append(p) or real(p, mode))
    classify, costs = classifier(RULES)
    for _ in range(3):
        classify.classify(Facts(path="/api/x"), costs)
    assert calls == ["/api/x"]
    for i in range(module.CACHE_SIZE - 1):  # with /api/x: exactly full
        classify.classify(Facts(path=f"/n{i}"), costs)
    assert repr(classify) == f"<Classifier 8 rules, {module.CACHE_SIZE} routes cached>"
    classify.classify(Facts(path="/one-more"), costs)
    assert repr(classify) == "<Classifier 8 rules, 1 routes cached>"


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


# -- mutation testing, after merging round 3 (bench/results/mutation.md) ---------------------

def test_path_template_limits_at_their_edges() -> None:
    from balancer.balancing.classify import MAX_SEGMENT, MAX_TEMPLATE_SEGMENTS
    assert path_template("/a" * MAX_TEMPLATE_SEGMENTS) == "/a" * MAX_TEMPLATE_SEGMENTS
    assert path_template("/a" * (MAX_TEMPLATE_SEGMENTS + 2)) == (
        "/a" * MAX_TEMPLATE_SEGMENTS + "/**")
    assert path_template("/" + "g" * MAX_SEGMENT) == "/" + "g" * MAX_SEGMENT
    assert path_template("/" + "g" * (MAX_SEGMENT + 1)) == "/{long}"
    assert path_template("/abcdef0123456789") == "/{hash}"  # 16 characters, a letter first


def test_a_cached_refusal_says_the_same_why_the_second_time() -> None:
    classify, costs = classifier(RULES)
    for _ in range(2):
        with pytest.raises(BadTarget) as refused:
            classify.classify(Facts(path="/a/../b"), costs)
        assert str(refused.value) == "request path has a dot segment (. or ..)"


def test_only_method_and_path_up_to_max_cached_path_are_cached() -> None:
    from balancer.balancing.classify import MAX_CACHED_PATH
    classify, costs = classifier(RULES)
    classify.classify(Facts(path="/" + "a" * (MAX_CACHED_PATH - 4)), costs)  # GET + 512
    assert repr(classify) == "<Classifier 8 rules, 1 routes cached>"
    classify.classify(Facts(path="/" + "b" * (MAX_CACHED_PATH - 3)), costs)
    assert repr(classify) == "<Classifier 8 rules, 1 routes cached>"


def test_a_cost_hint_is_judged_against_the_learned_threshold_and_scored_by_it() -> None:
    classify, _ = classifier(EDGE_RULES + '    - {path: "/thirty", cpu_ms: 30ms}\n')
    auto = CostModel(Learning(), cpu_threshold_ms=200, io_threshold=0.5)
    decision = classify.classify(Facts(path="/at-threshold"), auto)
    assert (decision.request_class, decision.score) == ("light_cpu", 0.5)
    decision = classify.classify(Facts(path="/thirty"), None)
    assert (decision.request_class, decision.score) == ("light_cpu", pytest.approx(0.3))


def test_a_learned_decision_in_full() -> None:
    classify, costs = classifier(RULES)
    for sample in range(5):
        costs.observe("GET /elsewhere", cpu_ms=250, wall_ms=260, now=float(sample))
    decision = classify.classify(Facts(path="/elsewhere"), costs)
    assert (decision.request_class, decision.source, decision.score, decision.template) == (
        "heavy_cpu", "learned", 2.5, "GET /elsewhere")


def test_a_rule_with_one_cost_hint_under_its_threshold_is_light_a_pool_only_one_the_default(
) -> None:
    config = parse_config("""\
listen: 127.0.0.1:0
pools:
  io: {backends: [http://127.0.0.1:1]}
  light: {backends: [http://127.0.0.1:2]}
  heavy: {backends: [http://127.0.0.1:3]}
routing:
  cpu_threshold: 100ms
  classes: {io: io, light_cpu: light, heavy_cpu: heavy}
  default_class: io
  rules:
    - {path: /cpu, cpu_ms: 30ms}
    - {path: /wait, io_ratio: 0.2}
    - {path: /pool, pool: heavy}
""")
    assert config.routing is not None
    classify = Classifier(config.routing)
    classes = [classify.classify(Facts(path=p), None).request_class
               for p in ("/cpu", "/wait", "/pool")]
    assert classes == ["light_cpu", "light_cpu", "io"]
