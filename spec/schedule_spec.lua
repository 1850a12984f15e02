-- faceid.schedule: the shape of every schedule at its key points, one_cycle
-- against torch's OneCycleLR (spec/fixtures/optim_torch.lua), the seed
-- schedule against a step-by-step accumulation, inspection and errors.
local faceid = require("faceid")
local helper = require("helper")
local schedule = faceid.schedule

local torch_ref = dofile("spec/fixtures/optim_torch.lua")

local close = helper.close_numbers(1e-12)

describe("schedule.constant and schedule.step", function()
  it("keeps a constant rate, with beta1 only when given", function()
    local s = schedule.constant({ lr = 0.01 })
    assert.are.same({ lr = 0.01 }, s(0))
    assert.are.same({ lr = 0.01 }, s(123456))
    assert.are.same({ lr = 0.01, beta1 = 0.9 }, schedule.constant({ lr = 0.01, beta1 = 0.9 })(7))
  end)

  it("multiplies by gamma every step_size steps or at each milestone", function()
    local s = schedule.step({ lr = 1.0, gamma = 0.5, step_size = 10 })
    assert.are.equal(1.0, s(0).lr)
    assert.are.equal(1.0, s(9).lr)
    assert.are.equal(0.5, s(10).lr)
    assert.are.equal(0.25, s(25).lr)
    local m = schedule.step({ lr = 2.0, milestones = { 5, 8 } })
    assert.are.equal(2.0, m(4).lr)
    close(m(5).lr, 0.2)
    close(m(7).lr, 0.2)
    close(m(8).lr, 0.02)
    close(m(1000).lr, 0.02)
  end)
end)

describe("schedule.cosine", function()
  it("warms up linearly, then follows half a cosine to min_lr", function()
    local s = schedule.cosine({ lr = 1.0, steps = 10, warmup = 2, min_lr = 0.1 })
    assert.are.equal(0, s(0).lr)
    close(s(1).lr, 0.5)
    close(s(2).lr, 1.0)
    close(s(6).lr, 0.55)                                  -- halfway: (1 + 0.1) / 2
    close(s(4).lr, 0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2) -- a quarter of the way
    close(s(10).lr, 0.1)
    close(s(50).lr, 0.1)
    local n = schedule.cosine({ lr = 0.3, steps = 4 })
    close(n(0).lr, 0.3)
    close(n(2).lr, 0.15)
    close(n(4).lr, 0)
    for t = 1, 4 do assert.is_true(n(t).lr < n(t - 1).lr) end
  end)
end)

describe("schedule.triangular", function()
  it("climbs from base_lr to max_lr in step_size steps and back", function()
    local s = schedule.triangular({ base_lr = 1, max_lr = 3, step_size = 4 })
    local want = { [0] = 1, 1.5, 2, 2.5, 3, 2.5, 2, 1.5, 1, 1.5 }
    for t = 0, 9 do close(s(t).lr, want[t], 1e-12, "t=" .. t) end
    close(s(12).lr, 3)
    assert.is_nil(s(0).beta1)
  end)

  it("moves beta1 the opposite way when asked", function()
    local s = schedule.triangular({ base_lr = 1, max_lr = 3, step_size = 4, base_beta1 = 0.85, max_beta1 = 0.95 })
    close(s(0).beta1, 0.95)
    close(s(2).beta1, 0.90)
    close(s(4).beta1, 0.85)
    close(s(8).beta1, 0.95)
  end)

  it("halves the amplitude each cycle (triangular2) or decays it (exp_range)", function()
    local s2 = schedule.triangular({ base_lr = 1, max_lr = 3, step_size = 4, mode = "triangular2" })
    close(s2(4).lr, 3)
    close(s2(12).lr, 2)
    close(s2(20).lr, 1.5)
    close(s2(16).lr, 1)
    local se = schedule.triangular({ base_lr = 1, max_lr = 3, step_size = 4, mode = "exp_range", gamma = 0.9 })
    close(se(4).lr, 1 + 2 * 0.9 ^ 4)
    close(se(12).lr, 1 + 2 * 0.9 ^ 12)
  end)
end)

describe("schedule.one_cycle", function()
  it("matches torch's OneCycleLR step for step", function()
    local s = schedule.one_cycle({ max_lr = 0.01, steps = 20, pct_start = 0.25, div_factor = 10,
      final_div_factor = 100 })
    for t, want in ipairs(torch_ref.one_cycle) do
      local v = s(t - 1)
      close(v.lr, want[1], 1e-12, "lr at " .. (t - 1))
      close(v.beta1, want[2], 1e-12, "beta1 at " .. (t - 1))
    end
  end)

  it("has its key points where stated", function()
    local s = schedule.one_cycle({ max_lr = 1.0, steps = 101, pct_start = 0.5, anneal = "linear" })
    -- up from 1/25 to 1 at t = 0.5 * 101 - 1 = 49.5, down to 1/25/1e4 at t = 100
    close(s(0).lr, 0.04)
    close(s(0).beta1, 0.95)
    local peak = 49.5
    close(s(49).lr, 0.04 + 0.96 * 49 / peak)
    close(s(49).beta1, 0.95 - 0.1 * 49 / peak)
    close(s(100).lr, 4e-6)
    close(s(100).beta1, 0.95)
    close(s(500).lr, 4e-6)
    assert.is_nil(schedule.one_cycle({ max_lr = 1, steps = 10, cycle_beta1 = false })(3).beta1)
  end)
end)

describe("schedule.seed", function()
  -- the original's generator, step by step: accumulate increments (our own
  -- transcription of the rule in SYSTEM.md and the schedule's comment)
  local function accumulate(spe, n)
    local out = {}
    local base, max_lr, hi, lo = 1e-4, 3e-4, 0.95, 0.85
    local S, H = 2 * spe, spe
    local lr, b1 = base, hi
    out[#out + 1] = { lr, b1 }
    while #out < n do
      local df, db = (max_lr - base) / S, (hi - lo) / S
      for _ = 1, S do lr, b1 = lr + df, b1 - db; out[#out + 1] = { lr, b1 } end
      for _ = 1, S do lr, b1 = lr - df, b1 + db; out[#out + 1] = { lr, b1 } end
      local new_base = base * 0.85
      for _ = 1, H do lr = lr - (base - new_base) / H; out[#out + 1] = { lr, b1 } end
      base = new_base
    end
    return out
  end

  it("has the original's key points", function()
    local spe = 10
    local s = schedule.seed({ steps_per_epoch = spe })
    local S, P = 20, 50 -- 2 epochs up, 2 down, 1 lowering the base
    local function at(t, lr, b1)
      local v = s(t)
      close(v.lr, lr, 1e-12, "lr at " .. t)
      close(v.beta1, b1, 1e-12, "beta1 at " .. t)
    end
    at(0, 1e-4, 0.95)
    at(S / 2, 2e-4, 0.90)
    at(S, 3e-4, 0.85)
    at(S + S / 2, 2e-4, 0.90)
    at(2 * S, 1e-4, 0.95)
    at(2 * S + 5, 0.925e-4, 0.95)
    at(P, 0.85e-4, 0.95)
    at(P + S, 3e-4, 0.85)
    at(2 * P, 0.85 ^ 2 * 1e-4, 0.95)
    at(10 * P, 0.85 ^ 10 * 1e-4, 0.95)
  end)

  it("equals the step-by-step accumulation over three periods", function()
    local spe = 7
    local s = schedule.seed({ steps_per_epoch = spe })
    for t, want in ipairs(accumulate(spe, 3 * 5 * spe + 1)) do
      local v = s(t - 1)
      close(v.lr, want[1], 1e-9, "lr at " .. (t - 1))
      close(v.beta1, want[2], 1e-9, "beta1 at " .. (t - 1))
    end
  end)

  it("takes its bounds from options", function()
    local s = schedule.seed({ steps_per_epoch = 1, base_lr = 1, max_lr = 2, base_beta1 = 0.5, max_beta1 = 0.7,
      half_cycle = 1, decay_epochs = 2, decay = 0.5 })
    -- S = 1, H = 2, P = 4
    assert.are.same({ lr = 1, beta1 = 0.7 }, s(0))
    close(s(1).lr, 2)
    close(s(1).beta1, 0.5)
    close(s(2).lr, 1)
    close(s(3).lr, 0.75)
    close(s(4).lr, 0.5)
    close(s(5).lr, 2)
  end)
end)

describe("schedule objects", function()
  it("list their values with table()", function()
    local s = schedule.triangular({ base_lr = 1, max_lr = 3, step_size = 2, base_beta1 = 0.8, max_beta1 = 0.9 })
    local rows = s:table(5)
    assert.are.equal(5, #rows)
    assert.are.same({ step = 4, lr = 1, beta1 = 0.9 }, rows[5])
    assert.are.same({ 0, 3, 6 }, { s:table(7, 3)[1].step, s:table(7, 3)[2].step, s:table(7, 3)[3].step })
    local text = tostring(rows)
    assert.matches("step%s+lr%s+beta1", text)
    assert.matches("\n%s+2%s+3%s+0.8", text)
    assert.are.equal(6, select(2, text:gsub("\n", "")) + 1)
    assert.matches("^faceid.schedule.triangular{", tostring(s))
    assert.matches("step%s+lr\n", tostring(schedule.constant({ lr = 1 }):table(2)))
  end)

  it("refuse bad options and bad steps", function()
    assert.error_matches(function() schedule.constant({ lr = 1, lrr = 2 }) end, "faceid.schedule.constant: unknown option 'lrr'")
    assert.error_matches(function() schedule.constant({}) end, "option 'lr' is required")
    assert.error_matches(function() schedule.constant({ lr = -1 }) end, "option 'lr' must be a number >= 0")
    assert.error_matches(function() schedule.constant(1) end, "options must be a table")
    assert.error_matches(function() schedule.step({ lr = 1 }) end, "exactly one of 'step_size' and 'milestones'")
    assert.error_matches(function() schedule.step({ lr = 1, milestones = { 5, 3 } }) end, "increasing integers")
    assert.error_matches(function() schedule.cosine({ lr = 1, steps = 5, warmup = 5 }) end, "'warmup' must be smaller")
    assert.error_matches(function() schedule.triangular({ base_lr = 1, max_lr = 2, step_size = 0 }) end,
      "'step_size' must be an integer >= 1")
    assert.error_matches(function() schedule.triangular({ base_lr = 1, max_lr = 2, step_size = 2, mode = "x" }) end,
      "must be one of triangular, triangular2, exp_range")
    assert.error_matches(function() schedule.triangular({ base_lr = 1, max_lr = 2, step_size = 2, max_beta1 = 0.9 }) end,
      "both 'base_beta1' and 'max_beta1'")
    assert.error_matches(function() schedule.one_cycle({ max_lr = 1, steps = 2 }) end, "too small")
    assert.error_matches(function() schedule.seed({}) end, "'steps_per_epoch' is required")
    assert.error_matches(function() schedule.seed({ steps_per_epoch = 2.5 }) end, "must be an integer >= 1")
    assert.error_matches(function() schedule.seed({ steps_per_epoch = 2, base_lr = 1 }) end, "must not exceed")
    local s = schedule.constant({ lr = 1 })
    assert.error_matches(function() s(-1) end, "step must be an integer >= 0, got %-1")
    assert.error_matches(function() s(1.5) end, "step must be an integer >= 0")
    assert.error_matches(function() s("1") end, "step must be an integer >= 0")
    assert.are.equal(1, s(2.0).lr)
    assert.error_matches(function() s:table(-1) end, "n must be an integer >= 0")
  end)

  it("feeds an optimizer through opt:set", function()
    local p = { param = faceid.ones(2), grad = faceid.zeros(2) }
    local opt = faceid.Adam({ p })
    local s = schedule.seed({ steps_per_epoch = 5 })
    opt:set(s(10))
    close(opt.lr, 3e-4)
    close(opt.beta1, 0.85)
  end)
end)
