--[[
count_uplift.lua -- count one event towards every measured rule the customer is assigned in.

KEYS, three per measured rule i (0-based), in rule order:
KEYS[3i+1] the rule's assignments hash (customer -> {"arm", "at", "segment"} as JSON)
KEYS[3i+2] the rule's tally hash ("o|<customer>" orders, "r|<customer>" revenue in minor
           units, "m|<customer>" moves "from>to;...")
KEYS[3i+3] this (rule, customer)'s marks hash: "e:<kind>:<event id>" -> 1 for an event
           counted, "b:<order id>" -> minor units of a counted order not yet refunded ("x"
           once refunded in full); its time to live is renewed by each write, and an erasure
           deletes it whole, so no mark outlives the customer's data
ARGV[1] customer id   ARGV[2] kind: c completion (ARGV[3] = minor units), r refund, f full
        refund (ARGV[3] = minor units refunded), m segment move (ARGV[3] = "from>to")
ARGV[4] when the event happened, epoch ms   ARGV[5] the marks' time to live, ms
ARGV[6] the order id (c, r, f; "" for a move)   ARGV[7] the event id
ARGV[8+i] rule i's window, ms

Returns  how many rules counted the event.

Invariant kept atomically: an event (by kind and id) counts at most once per rule, and only
inside the window after the customer's assignment; an order id counts as a purchase at most
once per rule, also re-sent under another event id after a full refund; a refund takes back
at most what its counted order has left.
--]]
local customer, kind, value = ARGV[1], ARGV[2], ARGV[3]
local at, ttl, order = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
-- moves and orders are told apart: a shop's order event id may look like a change's
local mark = 'e:' .. (kind == 'm' and 'm' or 'o') .. ':' .. ARGV[7]
local counted = 0
for i = 0, #KEYS / 3 - 1 do
  local assign, tally, marks = KEYS[3*i+1], KEYS[3*i+2], KEYS[3*i+3]
  local given = redis.call('HGET', assign, customer)
  if given then
    local since = cjson.decode(given)['at']
    if at >= since and at < since + tonumber(ARGV[8+i])
        and redis.call('HSETNX', marks, mark, '1') == 1 then
      counted = counted + 1
      if kind == 'c' then
        if redis.call('HSETNX', marks, 'b:' .. order, value) == 1 then
          redis.call('HINCRBY', tally, 'o|' .. customer, 1)
          redis.call('HINCRBY', tally, 'r|' .. customer, value)
        end
      elseif kind == 'm' then
        local moves = redis.call('HGET', tally, 'm|' .. customer)
        redis.call('HSET', tally, 'm|' .. customer, moves and (moves .. ';' .. value) or value)
      else
        local left = tonumber(redis.call('HGET', marks, 'b:' .. order) or '-1') or -1
        if left >= 0 then
          local take = math.min(left, tonumber(value))
          redis.call('HINCRBY', tally, 'r|' .. customer, -take)
          if kind == 'f' then
            redis.call('HINCRBY', tally, 'o|' .. customer, -1)
            redis.call('HSET', marks, 'b:' .. order, 'x')
          else
            redis.call('HSET', marks, 'b:' .. order, left - take)
          end
        end
      end
      redis.call('PEXPIRE', marks, ttl)
    end
  end
end
return counted
