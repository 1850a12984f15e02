-- spec/dist/die.lua HOW: rank 1 fails while rank 0 waits for it in a
-- collective (forever, unless the job is stopped). HOW: "error" (an
-- uncaught Lua error), "exit" (os.exit without finalize), "kill" (SIGKILL).
local faceid = require("faceid")
local dist = faceid.dist
local rank = dist.init()
local t = faceid.ones(3)
dist.allreduce(t, "sum")
if rank == 1 then
  local how = arg[1]
  if how == "error" then error("rank 1 fails on purpose") end
  if how == "exit" then os.exit(3) end
  if how == "kill" then
    local f = assert(io.open("/proc/self/stat"))
    local pid = f:read("n")
    f:close()
    os.execute("kill -9 " .. pid)
  end
end
while true do dist.allreduce(t, "sum") end
