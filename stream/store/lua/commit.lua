--[[
commit.lua -- apply a batch of customers' new states in one atomic step.

KEYS[1]  fence hash (v = thresholds version, mv = CLV model version): the thresholds hash
         itself when unsharded, else this shard's mirror of it (see raise_fence.lua)
KEYS[2]  live segment counts hash      KEYS[3]  outbox stream
KEYS[4..7] the population indexes ix:r ix:f ix:m ix:i as single zsets, the older layout
         (entries leave them as their customers commit), and the names their buckets
         extend: bucket "<bound>" of ix:r is the zset "ix:r:<bound>" (member = customer id,
         score = value; see stream/store/buckets.py)
KEYS[8]  the shard's single due zset of the older layout (entries leave it as their
         customers commit; see KEYS[18+4n])
KEYS[9]  event clock (string, highest occurred_at applied)
KEYS[10] counters hash (accepted, changes)
KEYS[11] segment report hash ("<seg>|orders", "<seg>|monetary", "<seg>|ch:<channel>")
KEYS[12] R x F grid hash ("<r>:<f>" -> customers)
KEYS[13] this hour's transitions hash ("<from>><to>" -> moves)
KEYS[14] due heads zset (member = a due bucket's key, score <= the bucket's earliest entry)
KEYS[15..18] the bucket directories of ix:r ix:f ix:m ix:i (zsets, every score 0, member
         = a bucket's bound: "" for the first, else the 7-byte encoded value and the id of
         its first member, so BYLEX order is the index's (value, id) order)
KEYS[19..22] their bucket sizes (hash, bound -> members; the same bounds as the directory)
then for the n-th customer of the batch (n = 0, 1, ...):
KEYS[23+4n] its hash   KEYS[24+4n] its dedupe marks zset from before marks moved into
           the hash (member = event id, score = expiry; read by load.lua until it expires)
KEYS[25+4n] its segment history (list, newest first: one line per change, see
           stream/store/history.py; at most ARGV[4]; deleted with the customer on erasure)
KEYS[26+4n] its due bucket (zset, member = customer id, score = when the clock alone
           next changes the customer)

ARGV[1]  thresholds version the batch was scored against ("-1" = do not check)
ARGV[2]  CLV model version the churn flags depend on ("-1" = do not check)
ARGV[3]  "1" when KEYS[1] is a shard's mirror: a batch scored against a newer version than
         the mirror holds raises it (that version is published); "0" = exact match only
ARGV[4]  how many changes a customer's segment history keeps (the oldest leave first)
ARGV[5]  the server's run id as the worker's positions check read it before the batch
         ("" = do not check): a server that restarted since (or a replica that took over)
         may have lost what came before the batch, and applying the batch on top of that
         would apply its events out of order; the worker reads its input again instead
ARGV[6..] one record per customer, in KEYS order, flat (no JSON to decode: decoding the
         documents was a quarter of this script's time). A record is 14 header values
           id, expected version (0 = absent), flags, #set, #del, #out, #agg, #grid,
           segment before, segment after, event clock ms, events accepted ("" = none),
           #hist, #moves
         where flags holds "x" (index entries follow), "e" (erase the customer), "f" (an
         erasure: drop its older marks zset and its segment history), "s" (the segment
         moved);
         then, with "x", per dimension r f m i its old bound, new score and new bound
         ("" = no entry; the old bound comes from the hash's "x" field, which the same
         record rewrites) and its due score ("" removes the entry); without "x" they stay
         as stored: a re-score from the standing, whose metrics did not move;
         then the sections the header counts: HSET field/value pairs (dedupe marks among
         them, as "e:<event id>" -> expiry: no key and no commands of their own), HDEL
         fields, change events to publish, their segment history entries (in seq order;
         pushed unless the record erases the customer), report deltas ("<seg>|orders" ...,
         n) and R x F grid deltas (cell, n) as pairs, then the moves of its changes for the
         transitions hash ("<from>><to>", n; one per change that moved the segment, so a
         commit carrying A->B and B->C counts both, not A->C). Numbers travel as decimal
         strings.

Returns  {1, {result, ...}, outbox entry id or false} with result 1 (applied) or 0 (the
         customer changed since it was read: recompute it); {0, "thresholds"} when a
         refresh (or a model fit) published a newer version, {0, "restarted"} when the
         server is not the one ARGV[5] names: nothing was applied in either case. The
         call's changes share one outbox entry (fields c<k>, e<k>: customer, change): one
         XADD per call, not one per change, which was a tenth of this script's time.
         All KEYS share one hash tag when sharded, so the call stays in one cluster slot.

Invariant kept atomically: each applied customer's state, segment history (its newest
ARGV[4] changes since the list began, each entered with the event its outbox entry holds),
dedupe marks, index entries (with at most one due entry, in its bucket, and that bucket's
head no later than it; each score index entry in the one bucket its bound falls in, every
bucket non-empty, under 128 members, listed in its directory and counted in its sizes hash,
every bound but the first its first member's entry) and outbox entries move together with
the live counts, counters and operator aggregates (report, grid, transitions), so counts
always equal the customers per stored segment, no change can be lost between state and
publish, and a history never shows a change that was not published. A customer whose
version moved is skipped whole; the aggregates sum only what was applied.
--]]

-- true when the batch may commit against the fence's field
local function fenced(field, wanted)
  if wanted == '-1' then return true end
  local have = tonumber(redis.call('HGET', KEYS[1], field) or '0')
  local want = tonumber(wanted)
  if have == want then return true end
  if have < want and ARGV[3] == '1' then
    redis.call('HSET', KEYS[1], field, wanted)
    return true
  end
  return false
end
if ARGV[5] ~= '' and ARGV[5] ~= string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') then
  return {0, 'restarted'}
end
if not fenced('v', ARGV[1]) or not fenced('mv', ARGV[2]) then
  return {0, 'thresholds'}
end

local TRANSITIONS_TTL_MS = 400 * 86400000
local DIMS = 4
local counts, report, grid, moves = {}, {}, {}, {}
local accepted, changes, clock = 0, 0, nil
local results = {}
local outbox = {} -- c<k> customer, e<k> change, for every change of the call

local function add(t, k, delta)
  t[k] = (t[k] or 0) + delta
end

-- ---- score index buckets (stream/store/buckets.py) ----
local BUCKET_MAX = 128 -- Redis's default zset-max-listpack-entries: split before it converts
local OFFSET = 4503599627370496 -- 2^52
local LIMIT = OFFSET - 1

-- buckets.encode: 7-byte big-endian value + 2^52, clamped, so byte order is numeric order
local function encode(score)
  local v = tonumber(score)
  if v > LIMIT then v = LIMIT elseif v < -LIMIT then v = -LIMIT end
  local u, out = v + OFFSET, {}
  for i = 7, 1, -1 do
    local byte = u % 256
    out[i] = byte
    u = (u - byte) / 256
  end
  return string.char(unpack(out))
end

-- the bound of the bucket holding `bound`: the directory's last member <= it ("" = first)
local function bucket_of(d, bound)
  local found = redis.call('ZRANGE', KEYS[14 + d], '[' .. bound, '-', 'BYLEX', 'REV', 'LIMIT', 0, 1)
  return found[1] or ''
end

local function index_remove(d, bound, member)
  local b = bucket_of(d, bound)
  local key = KEYS[3 + d] .. ':' .. b
  if redis.call('ZREM', key, member) == 1 then
    local left = redis.call('HINCRBY', KEYS[18 + d], b, -1)
    if left == 0 then
      redis.call('HDEL', KEYS[18 + d], b)
      redis.call('ZREM', KEYS[14 + d], b)
    elseif b ~= '' and string.sub(b, 8) == member then
      -- the bound names the member that left (its first): rename the bucket after its
      -- first member now, so no customer id outlives its customer in a bound or key name
      local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      local renamed = encode(first[2]) .. first[1]
      redis.call('RENAME', key, KEYS[3 + d] .. ':' .. renamed)
      redis.call('ZREM', KEYS[14 + d], b)
      redis.call('ZADD', KEYS[14 + d], 0, renamed)
      redis.call('HDEL', KEYS[18 + d], b)
      redis.call('HSET', KEYS[18 + d], renamed, left)
    end
  end
end

local function index_add(d, score, bound, member)
  local b = bucket_of(d, bound)
  local key = KEYS[3 + d] .. ':' .. b
  if redis.call('ZADD', key, score, member) == 0 then return end -- already there
  local size = redis.call('HINCRBY', KEYS[18 + d], b, 1)
  if size == 1 then
    redis.call('ZADD', KEYS[14 + d], 0, b)
  elseif size >= BUCKET_MAX then -- the upper half becomes a bucket of its own
    local half = math.floor(size / 2)
    local upper = redis.call('ZRANGE', key, half, -1, 'WITHSCORES')
    local split = encode(upper[2]) .. upper[1]
    local pairs_ = {}
    for i = 1, #upper, 2 do
      pairs_[#pairs_ + 1] = upper[i + 1]
      pairs_[#pairs_ + 1] = upper[i]
    end
    redis.call('ZADD', KEYS[3 + d] .. ':' .. split, unpack(pairs_))
    redis.call('ZREMRANGEBYRANK', key, half, -1)
    redis.call('ZADD', KEYS[14 + d], 0, split)
    redis.call('HSET', KEYS[18 + d], b, half, split, size - half)
  end
end

local older_ix = {}
for d = 1, DIMS do older_ix[d] = redis.call('EXISTS', KEYS[3 + d]) == 1 end
local older_due = redis.call('EXISTS', KEYS[8]) == 1
local keep = tonumber(ARGV[4])
local p = 6 -- the next record's first value
local n = 0
while p <= #ARGV do
  n = n + 1
  local base = 23 + 4 * (n - 1)
  local hash, marks, history = KEYS[base], KEYS[base + 1], KEYS[base + 2]
  local member, flags = ARGV[p], ARGV[p + 2]
  local nset, ndel, nout = tonumber(ARGV[p + 3]), tonumber(ARGV[p + 4]), tonumber(ARGV[p + 5])
  local nagg, ngrid = tonumber(ARGV[p + 6]), tonumber(ARGV[p + 7])
  local seg_from, seg_to = ARGV[p + 8], ARGV[p + 9]
  local at, acc, nhist = ARGV[p + 10], ARGV[p + 11], tonumber(ARGV[p + 12])
  local nmoves = tonumber(ARGV[p + 13])
  local indexed = string.find(flags, 'x', 1, true)
  local ix = p + 14 -- (old bound, score, new bound) per dimension, then due, when indexed
  local q = indexed and ix + 3 * DIMS + 1 or ix -- the first section
  local next_record = q + nset + ndel + nout + nhist + nagg + ngrid + nmoves
  local current = tonumber(redis.call('HGET', hash, 'v') or '0')
  if current ~= tonumber(ARGV[p + 1]) then
    results[n] = 0
  else
    if string.find(flags, 'f', 1, true) then
      -- an erasure: what the erased customer left goes, also when newer events follow it
      -- in the batch (the customer then starts again, with a history of its own)
      redis.call('DEL', marks, history)
    end
    local erased = string.find(flags, 'e', 1, true)
    if erased then
      redis.call('DEL', hash, history)
    elseif nset > 0 then
      redis.call('HSET', hash, 'v', tostring(current + 1), unpack(ARGV, q, q + nset - 1))
    else
      redis.call('HSET', hash, 'v', tostring(current + 1))
    end
    q = q + nset
    if ndel > 0 then
      redis.call('HDEL', hash, unpack(ARGV, q, q + ndel - 1))
    end
    q = q + ndel
    if indexed then
      for d = 1, DIMS do
        local o = ix + 3 * (d - 1)
        local old_bound, new_bound = ARGV[o], ARGV[o + 2]
        if older_ix[d] then redis.call('ZREM', KEYS[3 + d], member) end
        if old_bound ~= new_bound then
          if old_bound ~= '' then index_remove(d, old_bound, member) end
          if new_bound ~= '' then index_add(d, ARGV[o + 1], new_bound, member) end
        end
      end
      local due, bucket = ARGV[ix + 3 * DIMS], KEYS[base + 3]
      if due ~= '' then
        redis.call('ZADD', bucket, due, member)
        redis.call('ZADD', KEYS[14], 'LT', due, bucket) -- LT: a head only ever moves earlier
      elseif redis.call('ZREM', bucket, member) == 1 then
        -- rare (an erasure, or nothing left for the clock to do): the head need not stay
        -- early, and an erased customer's due time should not outlive it there
        local first = redis.call('ZRANGE', bucket, 0, 0, 'WITHSCORES')
        if first[1] then
          redis.call('ZADD', KEYS[14], first[2], bucket)
        else
          redis.call('ZREM', KEYS[14], bucket)
        end
      end
      if older_due then redis.call('ZREM', KEYS[8], member) end
    end
    local moved = string.find(flags, 's', 1, true)
    if moved then
      if seg_from ~= '' then add(counts, seg_from, -1) end
      if seg_to ~= '' then add(counts, seg_to, 1) end
    end
    for i = q, q + nout - 1 do
      local k = tostring(#outbox / 4)
      outbox[#outbox + 1] = 'c' .. k
      outbox[#outbox + 1] = member
      outbox[#outbox + 1] = 'e' .. k
      outbox[#outbox + 1] = ARGV[i]
    end
    q = q + nout
    if nhist > 0 and not erased then
      if redis.call('LPUSH', history, unpack(ARGV, q, q + nhist - 1)) > keep then
        redis.call('LTRIM', history, 0, keep - 1)
      end
    end
    q = q + nhist
    changes = changes + nout
    for i = q, q + nagg - 1, 2 do add(report, ARGV[i], tonumber(ARGV[i + 1])) end
    q = q + nagg
    for i = q, q + ngrid - 1, 2 do add(grid, ARGV[i], tonumber(ARGV[i + 1])) end
    q = q + ngrid
    for i = q, q + nmoves - 1, 2 do add(moves, ARGV[i], tonumber(ARGV[i + 1])) end
    if at ~= '' and (clock == nil or tonumber(at) > tonumber(clock)) then
      clock = at
    end
    if acc ~= '' then accepted = accepted + tonumber(acc) end
    results[n] = 1
  end
  p = next_record
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
local entry = false
if #outbox > 0 then
  entry = redis.call('XADD', KEYS[3], '*', unpack(outbox))
end
return {1, results, entry}
