# A deterministic allocation-heavy Python workload (run with PYTHONMALLOC=malloc).
import collections, hashlib, json, re

d = {f"key{i}": [i, str(i) * (i % 7), {"x": i}] for i in range(150000)}
lst = sorted(d.items(), key=lambda kv: (len(kv[1][1]), kv[0]))[:1000]
text = json.dumps(d, sort_keys=True)
back = json.loads(text)
words = re.findall(r"key(\d+)7", text)
cnt = collections.Counter(w[-1] for w in words)
s = set(range(0, 300000, 3)) ^ set(range(0, 300000, 5))
big = [bytes(1000 + i % 3000) for i in range(3000)]
del d
print(len(back), len(words), sorted(cnt.items())[:3], len(s), sum(map(len, big)))
print(hashlib.sha256(text.encode()).hexdigest(), lst[0][0], lst[-1][0])
