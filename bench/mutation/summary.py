"""Mutation score per module from `mutmut results --all true` (the lines `name: status`).

Killed = killed by a test or a timeout (the mutant hung the tests: detected). Every other
finished status (survived, no tests) is a surviving mutant. Prints a Markdown table, then
the surviving mutants by module.
"""

import sys
from collections import Counter, defaultdict

DETECTED = {"killed", "timeout", "caught by type check", "segfault", "suspicious"}


def main(path: str) -> None:
    counts: defaultdict[str, Counter[str]] = defaultdict(Counter)
    survivors: defaultdict[str, list[str]] = defaultdict(list)
    with open(path) as lines:
        for line in lines:
            name, sep, status = line.strip().rpartition(": ")
            if not sep or not name.startswith("balancer."):
                continue
            module = name.split(".")[1]
            counts[module][status] += 1
            if status not in DETECTED and status != "not checked":
                survivors[module].append(f"{name} ({status})")
    print("| module | mutants | killed | timeout | survived | no tests | not checked | score |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    total: Counter[str] = Counter()
    for module in sorted(counts):
        if counts[module]["not checked"] == sum(counts[module].values()):
            continue  # not part of this run (make mutation MODULES=...)
        total.update(counts[module])
        print(_row(module, counts[module]))
    print(_row("**pure core**", total))
    print()
    for module in sorted(survivors):
        print(f"{module}: {len(survivors[module])} surviving")
        for name in survivors[module]:
            print(f"    {name}")


def _row(label: str, count: Counter[str]) -> str:
    done = sum(count.values()) - count["not checked"]
    detected = sum(count[s] for s in DETECTED)
    score = f"{100 * detected / done:.1f} %" if done else "-"
    return (f"| {label} | {sum(count.values())} | {count['killed']} | {count['timeout']} | "
            f"{count['survived']} | {count['no tests']} | {count['not checked']} | {score} |")


if __name__ == "__main__":
    main(sys.argv[1])
