"""Classify a request as io, light_cpu or heavy_cpu, and say why.

Pure. The decision, in order:
1. the first rule that matches (path glob or regex, methods, host, headers, content type,
   body size); a pinned rule (`pin: true`) decides alone. An unpinned rule decides too, with
   one exception: learning overrides it only to protect others, so a route the rule puts in
   another class (or pool) that the backends report as heavy_cpu goes to the heavy_cpu pool
   (`learned-escalation`); learning never moves a cheap route between two cheap pools;
2. else the route's learned class, once it decides (stable once, or escalated);
3. else the request's own facts (method, content type, body size), as the seed router did.
Rules match the path the backend routes (`routed_path`: what uvicorn, waitress and gunicorn
put in `scope["path"]` / PATH_INFO), and a target they could resolve differently from each
other or from the classifier is refused (`BadTarget`, a 400). What depends only on the route
(its template and the matching rule) is cached per route, so the hot path is a dictionary
lookup; the work on a cache miss is bounded (C-speed scans, at most MAX_TEMPLATE_SEGMENTS
segments templated) and so is the cache (CACHE_SIZE entries, keys up to MAX_CACHED_PATH).
"""

import binascii
import fnmatch
import re
from typing import Protocol

from balancer.balancing.costs import AUTO_FLOOR_MS, CostModel
from balancer.config.routing import EncodedSlashes, RequestClass, RoutingConfig, Rule

CACHE_SIZE = 4096          # routes cached (then the cache starts over)
MAX_CACHED_PATH = 512      # longer method + raw path: classified afresh, never kept
MAX_TEMPLATE_SEGMENTS = 32  # segments a template is made of; the rest becomes `/**`
MEDIA = ("image/", "video/", "audio/", "application/octet-stream", "multipart/form-data")

MAX_SEGMENT = 64            # a longer segment is `{long}` in a template
_PRINTABLE = bytes(range(0x21, 0x7F))
_PERCENT_AS_QP = bytes.maketrans(b"%", b"=")
_COLLAPSE = re.compile(
    r"(\d+)|([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    r"|([0-9a-fA-F]{16,})|((?=[^/]*\d)[A-Za-z0-9_-]{20,})")
_COLLAPSED = (None, "{n}", "{uuid}", "{hash}", "{id}")


class BadTarget(ValueError):
    """A request target whose path the backends could resolve differently (answered 400)."""


def routed_path(raw: str, encoded_slashes: EncodedSlashes = "reject") -> str:
    """The path a backend routes for the origin-form `raw` (without the query): every
    %-escape decoded once, as UTF-8, nothing else changed, which is what uvicorn (httptools
    and h11), waitress and gunicorn agree on. Raises BadTarget for a target they may resolve
    differently, from each other or from a framework: a fragment, a byte outside printable
    ASCII, a malformed escape, a decoded path that is not UTF-8, a leading `//`, a dot
    segment (also encoded); with `encoded_slashes: reject`, also `%2F`, `%5C` (also
    double-encoded), a triple encoding (`%2525`) and a raw backslash. Linear time, and
    every step a C-speed pass over the path (no Python loop per character or escape)."""
    if raw == "*":
        return raw
    if not raw.startswith("/") or raw.startswith("//"):
        raise BadTarget("request path must start with a single /")
    if "#" in raw:
        raise BadTarget("a request target has no #fragment (RFC 9112 section 3.2)")
    if not raw.isascii() or raw.encode().translate(None, _PRINTABLE):
        raise BadTarget("request path has a byte outside printable ASCII")
    reject = encoded_slashes == "reject"
    if reject and "\\" in raw:
        raise BadTarget("request path has a backslash")
    if "%" not in raw:
        path = raw
    else:
        decoded = _percent_decoded(raw.encode())
        if decoded is None:
            raise BadTarget("request path has a % that starts no %-escape")
        if reject and (decoded.count(b"/") != raw.count("/") or b"\\" in decoded
                       or (b"%" in decoded and _encodes_a_separator(decoded))):
            raise BadTarget("request path has an encoded slash or backslash")
        try:
            path = decoded.decode("utf-8")
        except UnicodeDecodeError:
            raise BadTarget("request path does not decode to UTF-8") from None
        if path.startswith("//"):
            raise BadTarget("request path must start with a single /")
    if "." in path and _has_dot_segment(path):
        raise BadTarget("request path has a dot segment (. or ..)")
    return path


def _percent_decoded(raw: bytes) -> bytes | None:
    """Every %XX decoded, or None if a % starts no escape. Done as quoted-printable
    (`binascii.a2b_qp` decodes =XX in C), with each `=` of the path escaped first."""
    escapes = raw.count(b"%")
    if b"=" in raw:
        escapes += raw.count(b"=")
        raw = raw.replace(b"=", b"=3D")
    decoded = binascii.a2b_qp(raw.translate(_PERCENT_AS_QP))
    return decoded if len(decoded) == len(raw) - 2 * escapes else None


def _encodes_a_separator(decoded: bytes) -> bool:
    """Still an escape of / or \\ after one decoding (double-encoded), or a triple encoding."""
    lowered = decoded.lower()
    return b"%2f" in lowered or b"%5c" in lowered or b"%25" in lowered


def _has_dot_segment(path: str) -> bool:
    if "\\" in path:  # no separator for these servers, but one for some frameworks
        path = path.replace("\\", "/")
    path += "/"
    return "/./" in path or "/../" in path


def path_template(path: str) -> str:
    """`/user/42/orders/9f86d081884c7d65` → `/user/{n}/orders/{hash}`; only the first
    MAX_TEMPLATE_SEGMENTS segments are looked at (the rest is `/**`), and a segment over
    MAX_SEGMENT characters is `{long}`."""
    segments = path.split("/", MAX_TEMPLATE_SEGMENTS + 1)
    if len(segments) > MAX_TEMPLATE_SEGMENTS + 1:
        segments[-1] = "**"
    for index, segment in enumerate(segments):
        if len(segment) > MAX_SEGMENT:
            segments[index] = "{long}"
        elif segment and (segment[0].isdigit() or len(segment) >= 16):
            match = _COLLAPSE.fullmatch(segment)
            if match is not None:
                segments[index] = _COLLAPSED[match.lastindex or 0] or segment
    return "/".join(segments)


def query_keys(query: str) -> str:
    if not query:
        return ""
    if "&" not in query:
        return "?" + query.partition("=")[0]
    return "?" + "&".join(sorted({part.partition("=")[0] for part in query.split("&") if part}))


def glob_to_regex(glob: str) -> str:
    """`*` matches within a segment, `**` across segments; a trailing `/**` matches the prefix."""
    out = []
    i = 0
    while i < len(glob):
        if glob.startswith("/**", i) and i + 3 == len(glob):
            out.append("(?:/.*)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return "^" + "".join(out) + "$"


class RequestFacts(Protocol):
    """What the classifier may read of a request (the proxy adapts its request to this)."""

    method: str
    path: str            # raw path, without the query
    query: str
    content_length: int | None

    def host(self) -> str: ...
    def content_type(self) -> str: ...
    def header(self, name: str) -> str | None: ...


class Decision:
    """A classification and why (a plain slotted class: made on every request)."""

    __slots__ = ("pool", "request_class", "rule", "score", "source", "template")

    def __init__(self, request_class: RequestClass, source: str, score: float, template: str,
                 rule: int | None = None, pool: str | None = None) -> None:
        self.request_class = request_class
        # rule | learned | learned-escalation | default (spill is set by the pool choice)
        self.source = source
        self.score = score        # expected CPU per request over the cpu_threshold
        self.template = template
        self.rule = rule
        self.pool = pool          # a rule's own pool, instead of the class's

    def __repr__(self) -> str:
        return (f"<Decision {self.request_class} by {self.source} score={self.score:.2f} "
                f"{self.template!r}>")


class _CompiledRule:
    __slots__ = ("body_max", "body_min", "content_type", "headers", "host", "methods",
                 "needs_facts", "path", "rule")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        source = rule.path_regex if rule.path_regex is not None else (
            glob_to_regex(rule.path) if rule.path is not None else None)
        self.path = re.compile(source) if source is not None else None
        self.methods = frozenset(rule.methods)
        self.host = re.compile(fnmatch.translate(rule.host.lower())) if rule.host else None
        self.content_type = (re.compile(fnmatch.translate(rule.content_type.lower()))
                             if rule.content_type else None)
        self.headers = rule.headers
        self.body_min, self.body_max = rule.body_min, rule.body_max
        self.needs_facts = bool(self.host or self.content_type or self.headers
                                or self.body_min is not None or self.body_max is not None)

    def matches_route(self, method: str, path: str) -> bool:
        if self.methods and method not in self.methods:
            return False
        return self.path is None or self.path.search(path) is not None

    def matches_facts(self, facts: RequestFacts) -> bool:
        if self.host is not None and not self.host.match(facts.host().lower().split(":")[0]):
            return False
        if self.content_type is not None:
            media = facts.content_type().split(";")[0].strip().lower()
            if not self.content_type.match(media):
                return False
        for name, value in self.headers:
            actual = facts.header(name)
            if actual is None or (value is not None and actual != value):
                return False
        size = facts.content_length or 0
        if self.body_min is not None and size < self.body_min:
            return False
        return self.body_max is None or size <= self.body_max


class Classifier:
    """Rules compiled once per config; route-level work cached per (method, raw path)."""

    def __init__(self, routing: RoutingConfig) -> None:
        self.routing = routing
        self.threshold = routing.cpu_threshold_ms or AUTO_FLOOR_MS  # without a cost model
        self.encoded_slashes: EncodedSlashes = routing.encoded_slashes
        self._rules = [_CompiledRule(rule) for rule in routing.rules]
        self._cache: dict[tuple[str, str], tuple[str, tuple[_CompiledRule, ...]] | str] = {}

    def __repr__(self) -> str:
        return f"<Classifier {len(self._rules)} rules, {len(self._cache)} routes cached>"

    def _route(self, method: str, raw_path: str) -> tuple[str, tuple[_CompiledRule, ...]]:
        """(path template, the rules whose route part matches), cached; a refusal (the
        reason why) is cached too. Raises BadTarget."""
        key = (method, raw_path)
        cached = self._cache.get(key)
        if cached is None:
            try:
                path = routed_path(raw_path, self.encoded_slashes)
            except BadTarget as refused:
                cached = str(refused)
            else:
                candidates = tuple(r for r in self._rules if r.matches_route(method, path))
                cached = (f"{method} {path_template(path)}", candidates)
            if len(raw_path) + len(method) <= MAX_CACHED_PATH:
                if len(self._cache) >= CACHE_SIZE:
                    self._cache.clear()
                self._cache[key] = cached
        if isinstance(cached, str):
            raise BadTarget(cached)
        return cached

    def classify(self, facts: RequestFacts, costs: CostModel | None) -> Decision:
        """Raises BadTarget for a path the backends could resolve differently."""
        route, candidates = self._route(facts.method, facts.path)
        template = route + query_keys(facts.query)
        rule = None
        for candidate in candidates:
            if not candidate.needs_facts or candidate.matches_facts(facts):
                rule = candidate.rule
                break
        threshold = costs.threshold_ms if costs is not None else self.threshold
        learned = None
        if costs is not None and (rule is None or not rule.pin):
            known = costs.lookup(template)
            if known is not None and costs.decides(known):
                learned = known
        if rule is not None:
            ruled = rule.request_class or self._hinted(rule, threshold)
            if learned is not None and learned.learned_class == "heavy_cpu" != ruled:
                return Decision("heavy_cpu", "learned-escalation", learned.cpu_ms / threshold,
                                template, rule.index)
            score = (_nominal(ruled) if rule.request_class is not None
                     else (rule.cpu_ms or 0.0) / threshold)
            return Decision(ruled, "rule", score, template, rule.index, rule.pool)
        if learned is not None:
            return Decision(learned.learned_class, "learned", learned.cpu_ms / threshold,
                            template)
        return self._from_facts(facts, template)

    def _hinted(self, rule: Rule, threshold: float) -> RequestClass:
        """The class a rule's cost hint gives (a pool-only rule: the default class)."""
        if rule.cpu_ms is not None and rule.cpu_ms >= threshold:
            return "heavy_cpu"
        if rule.io_ratio is not None and rule.io_ratio >= self.routing.io_threshold:
            return "io"
        if rule.cpu_ms is None and rule.io_ratio is None:
            return self.routing.default_class
        return "light_cpu"

    def _from_facts(self, facts: RequestFacts, template: str) -> Decision:
        """The seed router's inputs, for a route with no rule and no history yet."""
        score = 0.1 if facts.method in ("GET", "HEAD", "OPTIONS") else 0.3
        if facts.content_length:
            media = facts.content_type().lower()
            if media.startswith(MEDIA):
                score += 0.5
            score += 0.3 * min(1.0, facts.content_length / 2**20)
        request_class = "heavy_cpu" if score >= 0.8 else self.routing.default_class
        return Decision(request_class, "default", round(score, 3), template)


def _nominal(request_class: RequestClass) -> float:
    return {"io": 0.0, "light_cpu": 0.5, "heavy_cpu": 1.0}[request_class]
