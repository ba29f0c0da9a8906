"""Classification: normalisation, templates, rule matching, and the order of decisions."""

from dataclasses import dataclass, field

import pytest

from balancer.classify import BadTarget, Classifier, glob_to_regex, path_template, query_keys
from balancer.config import parse_config
from balancer.costs import CostModel
from balancer.routing_config import Learning, RoutingConfig
from balancer.yamltree import ConfigError


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
