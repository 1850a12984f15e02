--- examples/custom_schedule.lua - your own learning-rate (and beta1)
-- schedule: any function of the step that returns {lr =, beta1 =} can
-- drive faceid.train.run, like the built-in ones in faceid.schedule.
--
--   lua5.4 examples/custom_schedule.lua [DATA_DIR]    (default: AT&T, else synthetic faces)
--
-- Here: a linear warm-up, then a cosine decay restarted twice, each restart
-- at a lower peak; beta1 dips while the rate is high (as in the
-- super-convergence recipe of the original).
local faceid = require("faceid")
local synthetic = require("faceid.synthetic")

local STEPS, WARMUP, CYCLES = 60, 6, 3
local PEAK, FLOOR = 2e-3, 1e-5

local function my_schedule(t)
  if t < WARMUP then
    return { lr = PEAK * (t + 1) / WARMUP, beta1 = 0.85 }
  end
  local len = (STEPS - WARMUP) / CYCLES
  local c = math.min(CYCLES - 1, (t - WARMUP) // len)
  local u = ((t - WARMUP) - c * len) / len            -- 0 .. 1 within a cycle
  local peak = PEAK * 0.5 ^ c
  local f = (1 + math.cos(math.pi * u)) / 2           -- 1 .. 0
  return { lr = FLOOR + (peak - FLOOR) * f, beta1 = 0.95 - 0.10 * f }
end

-- look at it before training with it
for t = 0, STEPS - 1, 6 do
  local h = my_schedule(t)
  print(("step %3d  lr %.2e  beta1 %.3f"):format(t, h.lr, h.beta1))
end

local dir = arg[1]
if not dir then
  local att = (os.getenv("FACEID_DATA") or "../shared/data") .. "/att_faces"
  if io.open(att .. "/s1/1.pgm", "rb") then
    dir = att
  else
    dir = os.tmpname() .. "-faces"
    assert(synthetic.write(dir, { people = 16, per_person = 8, size = 32 }))
    print("data: " .. synthetic.describe({ people = 16, per_person = 8, size = 32 }))
  end
end

local result = faceid.train.run({
  data = dir, net = { growth = 8, blocks = { 2, 2 }, stem = "small" }, input = 32, batch = 16,
  steps = STEPS, schedule = my_schedule, eval_every = 20, eval_pairs = 200, print_every = 10,
})
print(("loss %.3f -> %.3f; held-out AUC %.3f"):format(result.first_loss, result.last_loss, result.eval.auc))
