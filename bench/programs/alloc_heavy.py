"""Allocation-heavy Python for the python3 workload (run with PYTHONMALLOC=malloc so every
object goes through malloc). usage: python3 alloc_heavy.py SCALE

Builds and drops dicts of strings, lists of tuples, small class instances and sets, round-trips
JSON, sorts, and concatenates strings: the object churn of ordinary Python programs."""
import json
import sys

scale = int(sys.argv[1]) if len(sys.argv) > 1 else 10


class Node:
    __slots__ = ("key", "value", "children")

    def __init__(self, key, value):
        self.key = key
        self.value = value
        self.children = []


def build_tree(n):
    root = Node(0, "root")
    level = [root]
    k = 1
    while k < n:
        nxt = []
        for parent in level:
            for _ in range(4):
                child = Node(k, "v%d" % k)
                parent.children.append(child)
                nxt.append(child)
                k += 1
        level = nxt
    return root


def count(node):
    total = 1
    stack = [node]
    while stack:
        n = stack.pop()
        total += len(n.children)
        stack.extend(n.children)
    return total


check = 0
for rnd in range(scale):
    d = {"key%d_%d" % (rnd, i): [i, str(i), (i, i * 2)] for i in range(60000)}
    items = sorted(d.items(), key=lambda kv: kv[1][1])
    check += len(items)
    blob = json.dumps({"rows": [{"id": i, "name": "n%d" % i, "tags": ["a", "b", str(i)]}
                                for i in range(20000)]})
    back = json.loads(blob)
    check += len(back["rows"])
    tree = build_tree(40000)
    check += count(tree)
    s = set()
    for i in range(50000):
        s.add(("t", i % 7919, str(i % 101)))
    check += len(s)
    parts = []
    for i in range(30000):
        parts.append("line %d: %s\n" % (i, "x" * (i % 50)))
    check += len("".join(parts))
    del d, items, blob, back, tree, s, parts
print("check", check)
