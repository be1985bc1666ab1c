--[[
load.lua -- read a batch of customers and which of the given events each already applied.

KEYS[2n-1] the n-th customer's hash   KEYS[2n] its applied-event zset (score = mark expiry)
ARGV     for the n-th customer in turn: how many event ids to look up (may be 0), then
         those ids (flat, no JSON to decode)

Returns  one {hash fields and values (flat), {expiry or false per asked id}} per customer;
         the fields leave out the recent-change history ("h:<seq>"): scoring never reads
         it, and the commit knows which entries to drop from the seq numbers alone.

Read-only; one call instead of two commands per customer keeps the client's per-command
cost out of the hot path. Consistency comes from the commit script's version check.
--]]
local out = {}
local p = 1
for n = 1, #KEYS / 2 do
  local asked = tonumber(ARGV[p])
  local all = redis.call('HGETALL', KEYS[2 * n - 1])
  local fields = {}
  for i = 1, #all, 2 do
    local name = all[i]
    if string.byte(name, 1) ~= 104 or string.byte(name, 2) ~= 58 then -- not "h:"
      fields[#fields + 1] = name
      fields[#fields + 1] = all[i + 1]
    end
  end
  local marks = {}
  if asked > 0 then
    marks = redis.call('ZMSCORE', KEYS[2 * n], unpack(ARGV, p + 1, p + asked))
  end
  p = p + 1 + asked
  out[n] = {fields, marks}
end
return out
