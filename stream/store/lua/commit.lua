--[[
commit.lua -- apply one customer's new state in a single atomic step.

KEYS[1]  customer hash            KEYS[2]  thresholds hash (field v = version)
KEYS[3]  live segment counts hash KEYS[4]  outbox stream
KEYS[5..8] population indexes ix:r ix:f ix:m ix:i (zsets, member = customer id)
KEYS[9]  due zset (when the clock alone next changes the customer)
KEYS[10] event clock (string, highest occurred_at applied)
KEYS[11] the customer's applied-event zset (member = event id, score = expiry ms)
KEYS[12] counters hash (accepted, changes)
KEYS[13] segment report hash ("<seg>|orders", "<seg>|monetary", "<seg>|ch:<channel>")
KEYS[14] R x F grid hash ("<r>:<f>" -> customers)
KEYS[15] this hour's transitions hash ("<from>><to>" -> moves)
KEYS[16] the customer's recent changes (newest first, at most HISTORY compact entries:
         {seq, from, to, cause, at})

ARGV[1]  customer id (index member)
ARGV[2]  expected customer version (0 = customer absent)
ARGV[3]  thresholds version the scores were computed against ("-1" = do not check)
ARGV[4]  wall clock now, ms (marks at or before it have expired and are pruned)
ARGV[5]  expiry of the marks this commit adds, ms
ARGV[6]  JSON: {"set": [field, value, ...], "del": [field, ...],
                "ix": {"r": "score"|false, ...} (false removes), "due": "ms"|false,
                "seg": [from, to] | absent (present iff the segment moved),
                "out": ["change json", ...] | absent (segment change first, then churn),
                "mv": "model version" | absent (the churn flag depends on it: fence it too),
                "clock": "ms" | absent, "erase": true | absent (delete the customer),
                "forget": true | absent (an erasure: drop every dedupe mark first),
                "acc": number of input events this commit applies (for the counters),
                "agg": {"old": share|false, "new": share|false} when the customer's share
                       of the operator aggregates changes; share = [segment, orders,
                       monetary, [channels], "r:f" or ""],
                "hist": [history entry per "out" element]}
           all numbers travel as strings: cjson would round 13-digit millisecond values.
ARGV[7..] event ids this commit applies (dedupe marks to add)

Returns  {1, outbox-id, ...} applied (one id per change); {0, "version"} the customer changed
         since it was read; {0, "thresholds"} a refresh published newer thresholds (or a newer
         CLV model, when the churn flag depends on it) meanwhile.

Invariant kept atomically: the customer's state, its dedupe marks, its index entries, the live
segment counts the outbox entry for its change, the counters and the operator aggregates (segment report,
R x F grid, transitions, history) move together or not at all, so counts always equal the
number of customers per stored segment and no change can be lost between state and publish.
--]]

local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if current ~= tonumber(ARGV[2]) then
  return {0, 'version'}
end
local doc = cjson.decode(ARGV[6])
if ARGV[3] ~= '-1' then
  local tv = redis.call('HGET', KEYS[2], 'v') or '0'
  if tv ~= ARGV[3] then
    return {0, 'thresholds'}
  end
end
if doc['mv'] then
  local mv = redis.call('HGET', KEYS[2], 'mv') or '0'
  if mv ~= doc['mv'] then
    return {0, 'thresholds'}
  end
end
local member = ARGV[1]

if doc['forget'] then
  redis.call('DEL', KEYS[11])
end
if doc['erase'] then
  redis.call('DEL', KEYS[1], KEYS[16])
else
  local set = doc['set']
  if #set > 0 then
    redis.call('HSET', KEYS[1], unpack(set))
  end
  local del = doc['del']
  if #del > 0 then
    redis.call('HDEL', KEYS[1], unpack(del))
  end
  redis.call('HSET', KEYS[1], 'v', tostring(current + 1))
end

local dims = {'r', 'f', 'm', 'i'}
for n, dim in ipairs(dims) do
  local score = doc['ix'][dim]
  if score then
    redis.call('ZADD', KEYS[4 + n], score, member)
  else
    redis.call('ZREM', KEYS[4 + n], member)
  end
end

if doc['due'] then
  redis.call('ZADD', KEYS[9], doc['due'], member)
else
  redis.call('ZREM', KEYS[9], member)
end

local seg = doc['seg']
if seg then
  if seg[1] and seg[1] ~= '' then
    redis.call('HINCRBY', KEYS[3], seg[1], -1)
  end
  if seg[2] and seg[2] ~= '' then
    redis.call('HINCRBY', KEYS[3], seg[2], 1)
  end
end

if doc['clock'] then
  local clock = tonumber(redis.call('GET', KEYS[10]) or '0')
  if tonumber(doc['clock']) > clock then
    redis.call('SET', KEYS[10], doc['clock'])
  end
end

if #ARGV > 6 then
  local marks = {}
  for k = 7, #ARGV do
    marks[#marks + 1] = ARGV[5]
    marks[#marks + 1] = ARGV[k]
  end
  redis.call('ZADD', KEYS[11], unpack(marks))
  redis.call('PEXPIREAT', KEYS[11], ARGV[5])
end
if redis.call('EXISTS', KEYS[11]) == 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[11], '-inf', ARGV[4])
end

local function share(s, sign)
  if not s then
    return
  end
  local seg = s[1]
  -- amounts travel as decimal strings; a leading '-' negates without float arithmetic
  -- (Lua would print -1 * 0 as "-0", which HINCRBY refuses)
  for n, field in ipairs({'|orders', '|monetary'}) do
    local amount = s[n + 1]
    if amount ~= '0' then
      if sign < 0 then
        amount = '-' .. amount
      end
      redis.call('HINCRBY', KEYS[13], seg .. field, amount)
    end
  end
  for _, ch in ipairs(s[4]) do
    redis.call('HINCRBY', KEYS[13], seg .. '|ch:' .. ch, sign)
  end
  if s[5] ~= '' then
    redis.call('HINCRBY', KEYS[14], s[5], sign)
  end
end
if doc['agg'] then
  share(doc['agg']['old'], -1)
  share(doc['agg']['new'], 1)
end

local HISTORY = 10
local TRANSITIONS_TTL_MS = 400 * 86400000
local reply = {1}
local out = doc['out']
if out then
  for n, body in ipairs(out) do
    reply[#reply + 1] = redis.call('XADD', KEYS[4], '*', 'c', member, 'e', body)
    if not doc['erase'] then
      redis.call('LPUSH', KEYS[16], doc['hist'][n])
    end
  end
  redis.call('HINCRBY', KEYS[12], 'changes', #out)
  if not doc['erase'] then
    redis.call('LTRIM', KEYS[16], 0, HISTORY - 1)
  end
  if seg then
    redis.call('HINCRBY', KEYS[15], seg[1] .. '>' .. seg[2], 1)
    redis.call('PEXPIRE', KEYS[15], TRANSITIONS_TTL_MS)
  end
end
local accepted = tonumber(doc['acc'] or '0')
if accepted > 0 then
  redis.call('HINCRBY', KEYS[12], 'accepted', accepted)
end
return reply
