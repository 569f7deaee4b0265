-- Table-heavy Lua for the lua5.4 workload (Lua allocates through realloc/free, so the
-- preloaded allocator serves every table, string and closure). usage: lua5.4 tables.lua SCALE
local scale = tonumber(arg[1]) or 10
local check = 0
for round = 1, scale do
  -- records: many small tables with string keys
  local recs = {}
  for i = 1, 60000 do
    recs[i] = { id = i, name = "item" .. i, tags = { "a", "b", tostring(i % 97) }, score = i * 0.5 }
  end
  -- a hash table that grows and shrinks
  local map = {}
  for i = 1, 60000 do map["k" .. (i * 7919 % 60000)] = recs[i] end
  for i = 1, 60000, 2 do map["k" .. i] = nil end
  -- sort by a string key, then rebuild as arrays of arrays
  table.sort(recs, function(x, y) return x.name < y.name end)
  local grid = {}
  for r = 1, 300 do
    local row = {}
    for c = 1, 200 do row[c] = { r, c, r * c } end
    grid[r] = row
  end
  -- string building
  local parts = {}
  for i = 1, 30000 do parts[#parts + 1] = string.format("%d:%s", i, recs[(i % #recs) + 1].name) end
  local s = table.concat(parts, ",")
  -- queue churn with table.insert/remove
  local q = {}
  for i = 1, 20000 do
    table.insert(q, { i })
    if i % 3 == 0 then table.remove(q, 1) end
  end
  local n = 0
  for _ in pairs(map) do n = n + 1 end
  check = check + n + #s + #q + #grid[300]
  recs, map, grid, parts, q = nil, nil, nil, nil, nil
  collectgarbage("step", 0)
end
print("check", check)
