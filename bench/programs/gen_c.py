#!/usr/bin/env python3
"""Write a large C translation unit for the gcc -O2 workload to stdout.

usage: gen_c.py FUNCTIONS

Each generated function has local arrays, loops, a switch, a struct and calls to earlier
functions, so that the optimiser builds and frees a lot of IR (gcc allocates most of it through
its own GC pages, and much of the rest through malloc). Deterministic."""
import random
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
rnd = random.Random(99)
out = sys.stdout
out.write("#include <string.h>\n\nstruct rec { int a, b; double c; char name[16]; };\n\n")
for i in range(n):
    out.write("int f%d(int x, struct rec *r) {\n" % i)
    out.write("  int acc = x, buf[%d];\n" % rnd.randint(8, 64))
    out.write("  memset(buf, 0, sizeof buf);\n")
    out.write("  for (int i = 0; i < (int)(sizeof buf / sizeof buf[0]); i++) {\n")
    out.write("    buf[i] = acc * %d + i;\n" % rnd.randint(1, 97))
    out.write("    acc ^= buf[i] >> %d;\n  }\n" % rnd.randint(1, 7))
    out.write("  switch (acc & 7) {\n")
    for c in range(8):
        out.write("  case %d: acc += r->a * %d - r->b; r->c += acc * 0.%d; break;\n"
                  % (c, rnd.randint(1, 50), rnd.randint(1, 9)))
    out.write("  }\n")
    for _ in range(rnd.randint(1, 3)):
        if i > 0:
            out.write("  if (acc %% %d == 0) acc += f%d(acc - 1, r);\n"
                      % (rnd.randint(2, 9), rnd.randint(0, i - 1)))
    out.write("  r->name[acc & 15] = (char)acc;\n  return acc + r->a;\n}\n\n")
out.write("int main(void) { struct rec r = {1, 2, 0.5, \"x\"}; return f%d(3, &r) & 1; }\n" % (n - 1))
