--[[
commit.lua -- apply a batch of customers' new states in one atomic step.

KEYS[1]  fence hash (v = thresholds version, mv = CLV model version): the thresholds hash
         itself when unsharded, else this shard's mirror of it (see raise_fence.lua)
KEYS[2]  live segment counts hash      KEYS[3]  outbox stream
KEYS[4..7] population indexes ix:r ix:f ix:m ix:i (zsets, member = customer id)
KEYS[8]  due zset (when the clock alone next changes the customer)
KEYS[9]  event clock (string, highest occurred_at applied)
KEYS[10] counters hash (accepted, changes)
KEYS[11] segment report hash ("<seg>|orders", "<seg>|monetary", "<seg>|ch:<channel>")
KEYS[12] R x F grid hash ("<r>:<f>" -> customers)
KEYS[13] this hour's transitions hash ("<from>><to>" -> moves)
then for the n-th customer of the batch (n = 0, 1, ...):
KEYS[14+3n] its hash   KEYS[15+3n] its applied-event zset (member = event id, score = expiry)
KEYS[16+3n] its recent-changes list from before they moved into its hash (deleted with
           the customer on erasure; nothing else writes it now)

ARGV[1]  thresholds version the batch was scored against ("-1" = do not check)
ARGV[2]  CLV model version the churn flags depend on ("-1" = do not check)
ARGV[3]  wall clock now, ms (marks at or before it have expired and are pruned)
ARGV[4]  expiry of the marks this batch adds, ms
ARGV[5]  JSON array, one document per customer, in KEYS order:
         {"id": customer id, "v": expected version (0 = absent),
          "set": [field, value, ...], "del": [field, ...],
          "ix": {"r": "score"|false, ...} (false removes), "due": "ms"|false (both
          absent: leave the customer's index and due entries as they are),
          "erase": true (delete the customer), "forget": true (an erasure: drop its marks),
          "marks": [event id, ...] (dedupe marks to add), "clock": "ms",
          "out": ["change json", ...] (segment move, then churn; their history entries
          come in "set"/"del" as hash fields),
          "seg": [from, to] when the segment moved ("" = none),
          "agg": {field: "delta"} report deltas, "grid": {cell: "delta"}, "acc": "n"}
         numbers travel as strings: cjson would print 13-digit milliseconds in exponent form.
ARGV[6]  "1" when KEYS[1] is a shard's mirror: a batch scored against a newer version than
         the mirror holds raises it (that version is published); "0" = exact match only

Returns  {1, {result, ...}} with result {1, outbox-id, ...} (applied) or {0} (the customer
         changed since it was read: recompute it); {0, "thresholds"} when a refresh (or a
         model fit) published a newer version: nothing was applied.
         All KEYS share one hash tag when sharded, so the call stays in one cluster slot.

Invariant kept atomically: each applied customer's state (its recent-change history is
fields of the same hash), dedupe marks, index entries and outbox entries move together with
the live counts, counters and operator aggregates (report, grid, transitions), so counts
always equal the customers per stored segment and no change can be lost between state and
publish. A customer whose version moved is skipped
whole; the aggregates sum only what was applied.
--]]

-- true when the batch may commit against the fence's field
local function fenced(field, wanted)
  if wanted == '-1' then return true end
  local have = tonumber(redis.call('HGET', KEYS[1], field) or '0')
  local want = tonumber(wanted)
  if have == want then return true end
  if have < want and ARGV[6] == '1' then
    redis.call('HSET', KEYS[1], field, wanted)
    return true
  end
  return false
end
if not fenced('v', ARGV[1]) or not fenced('mv', ARGV[2]) then
  return {0, 'thresholds'}
end

local TRANSITIONS_TTL_MS = 400 * 86400000
local docs = cjson.decode(ARGV[5])
local counts, report, grid, moves = {}, {}, {}, {}
local accepted, changes, clock = 0, 0, nil
local results = {}

local function add(t, k, delta)
  t[k] = (t[k] or 0) + delta
end

for n, doc in ipairs(docs) do
  local base = 14 + 3 * (n - 1)
  local hash, marks, legacy = KEYS[base], KEYS[base + 1], KEYS[base + 2]
  local member = doc['id']
  local current = tonumber(redis.call('HGET', hash, 'v') or '0')
  if current ~= tonumber(doc['v']) then
    results[n] = {0}
  else
    if doc['forget'] then
      redis.call('DEL', marks)
    end
    if doc['erase'] then
      redis.call('DEL', hash, legacy)
    else
      local set = doc['set']
      set[#set + 1] = 'v'
      set[#set + 1] = tostring(current + 1)
      redis.call('HSET', hash, unpack(set))
      if #doc['del'] > 0 then
        redis.call('HDEL', hash, unpack(doc['del']))
      end
    end
    local ix = doc['ix']
    if ix then -- absent: a re-score from the standing, whose metrics did not move
      for d, dim in ipairs({'r', 'f', 'm', 'i'}) do
        local score = ix[dim]
        if score then
          redis.call('ZADD', KEYS[3 + d], score, member)
        else
          redis.call('ZREM', KEYS[3 + d], member)
        end
      end
      if doc['due'] then
        redis.call('ZADD', KEYS[8], doc['due'], member)
      else
        redis.call('ZREM', KEYS[8], member)
      end
    end
    local new_marks = doc['marks']
    if new_marks and #new_marks > 0 then
      local args = {}
      for _, id in ipairs(new_marks) do
        args[#args + 1] = ARGV[4]
        args[#args + 1] = id
      end
      redis.call('ZADD', marks, unpack(args))
      redis.call('PEXPIREAT', marks, ARGV[4])
      redis.call('ZREMRANGEBYSCORE', marks, '-inf', ARGV[3])
    end
    local seg = doc['seg']
    if seg then
      if seg[1] ~= '' then add(counts, seg[1], -1) end
      if seg[2] ~= '' then add(counts, seg[2], 1) end
    end
    if doc['agg'] then
      for field, delta in pairs(doc['agg']) do add(report, field, tonumber(delta)) end
    end
    if doc['grid'] then
      for cell, delta in pairs(doc['grid']) do add(grid, cell, tonumber(delta)) end
    end
    if doc['clock'] and (clock == nil or tonumber(doc['clock']) > tonumber(clock)) then
      clock = doc['clock']
    end
    local result = {1}
    local out = doc['out']
    if out then
      for _, body in ipairs(out) do
        result[#result + 1] = redis.call('XADD', KEYS[3], '*', 'c', member, 'e', body)
      end
      changes = changes + #out
      if seg then add(moves, seg[1] .. '>' .. seg[2], 1) end
    end
    accepted = accepted + tonumber(doc['acc'] or '0')
    results[n] = result
  end
end

-- the batch's net effect on the shared aggregates: a few writes instead of a few per customer
local function flush(key, t)
  for field, delta in pairs(t) do
    if delta ~= 0 then
      redis.call('HINCRBY', key, field, string.format('%d', delta))
    end
  end
end
flush(KEYS[2], counts)
flush(KEYS[11], report)
flush(KEYS[12], grid)
if next(moves) then
  flush(KEYS[13], moves)
  redis.call('PEXPIRE', KEYS[13], TRANSITIONS_TTL_MS)
end
if accepted > 0 then redis.call('HINCRBY', KEYS[10], 'accepted', accepted) end
if changes > 0 then redis.call('HINCRBY', KEYS[10], 'changes', changes) end
if clock and tonumber(clock) > tonumber(redis.call('GET', KEYS[9]) or '0') then
  redis.call('SET', KEYS[9], clock)
end
return {1, results}
