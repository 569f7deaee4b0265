#!/usr/bin/env python3
"""Write a large SQL script for the sqlite3 workload to stdout.

usage: gen_sqlite.py ROWS

The script (run as `sqlite3 :memory: < script`, so no disk I/O) parses ROWS individual INSERT
statements (the parser and the statement compiler allocate per statement), bulk-loads more rows
with a recursive CTE, builds indexes, and runs sorting, grouping, joins, string aggregation,
updates and deletes; a few PRAGMA cache settings keep sqlite's page cache on malloc.
Deterministic: the same ROWS gives the same script."""
import random
import sys

rows = int(sys.argv[1]) if len(sys.argv) > 1 else 50000
rnd = random.Random(1234)
words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo"]
out = sys.stdout
out.write("PRAGMA cache_size=-200000;\n")
out.write("CREATE TABLE item(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, price REAL, note TEXT);\n")
out.write("CREATE TABLE tag(item_id INTEGER, tag TEXT);\n")
out.write("BEGIN;\n")
for i in range(1, rows + 1):
    name = "-".join(rnd.choice(words) for _ in range(rnd.randint(1, 4)))
    note = " ".join(rnd.choice(words) for _ in range(rnd.randint(0, 12)))
    out.write("INSERT INTO item VALUES(%d,'%s',%d,%.2f,'%s');\n"
              % (i, name, rnd.randint(0, 999), rnd.uniform(0, 1000), note))
    if i % 3 == 0:
        out.write("INSERT INTO tag VALUES(%d,'%s');\n" % (i, rnd.choice(words)))
out.write("COMMIT;\n")
out.write("""BEGIN;
WITH RECURSIVE c(x) AS (SELECT %d UNION ALL SELECT x + 1 FROM c WHERE x < %d)
INSERT INTO item SELECT x, hex(randomblob(6)), abs(random()) %% 1000, abs(random()) %% 100000 / 100.0,
  substr(hex(randomblob(64)), 1, abs(random()) %% 120) FROM c;
COMMIT;
""" % (rows + 1, rows * 3))
out.write("""CREATE INDEX item_grp ON item(grp, price);
CREATE INDEX item_name ON item(name);
CREATE INDEX tag_tag ON tag(tag, item_id);
SELECT grp, count(*), avg(price), max(length(note)) FROM item GROUP BY grp ORDER BY 2 DESC LIMIT 5;
SELECT t.tag, count(*), sum(i.price) FROM tag t JOIN item i ON i.id = t.item_id GROUP BY t.tag ORDER BY 1;
SELECT count(DISTINCT name) FROM item;
SELECT length(group_concat(name, ',')) FROM (SELECT name FROM item ORDER BY note, price);
SELECT name, price FROM item ORDER BY lower(note) DESC, price LIMIT 3;
UPDATE item SET note = note || ' ' || name WHERE grp % 3 = 0;
DELETE FROM item WHERE grp % 5 = 1;
SELECT count(*), sum(length(note)) FROM item;
CREATE TABLE summary AS SELECT grp, group_concat(DISTINCT substr(name, 1, 5)) AS names FROM item GROUP BY grp;
SELECT count(*), sum(length(names)) FROM summary;
""")
