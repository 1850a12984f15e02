--- bench/common.lua - what the bench scripts share: their command-line
-- options and the median of their timings. Loaded by path, next to the
-- script that uses it:
--
--   local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local M = {}

--- opts (the defaults) updated from arg: `--key value` for each key of opts
-- (a number where the default is one and the value reads as one, else the
-- value as given, for the script's own checks) and `--key` alone for each
-- key of flags (set to true). Anything else writes usage to stderr and
-- exits with status 2.
function M.options(opts, usage, flags)
  flags = flags or {}
  local i = 1
  while arg and arg[i] do
    local key = arg[i]:match("^%-%-([%w%-]+)$")
    if key and flags[key] ~= nil then
      flags[key] = true
      i = i + 1
    elseif key and opts[key] ~= nil and arg[i + 1] then
      local v = arg[i + 1]
      opts[key] = type(opts[key]) == "number" and tonumber(v) or v
      i = i + 2
    else
      io.stderr:write(usage)
      os.exit(2)
    end
  end
  return opts, flags
end

--- The median of the numbers in t (t is left as it is); nil when t is empty.
function M.median(t)
  local s = table.move(t, 1, #t, 1, {})
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  return n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
end

return M
