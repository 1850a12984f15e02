-- Adam and SGD: single steps against hand arithmetic, several steps against
-- torch.optim (spec/fixtures/optim_torch.lua, written by
-- make_optim_fixtures.py), the weight-decay mask, live hyper-parameters,
-- state save/load and a bit-exact resumed DenseNet run.
local faceid = require("faceid")
local helper = require("helper")

local torch_ref = dofile("spec/fixtures/optim_torch.lua")

local close = helper.close_numbers(1e-7)

-- float32 rounding of a double, to state what a tensor must hold exactly
local function f32(x) return (string.unpack("f", string.pack("f", x))) end

-- one parameter tensor with its gradient, as the list form wants it
local function param(values, decay)
  local p = faceid.tensor(values)
  return { param = p, grad = faceid.zeros(#values), decay = decay }
end

local small_cfg = { growth = 4, blocks = { 2, 2 }, bottleneck = 2, stem = "small", input = 8, channels = 2,
  embedding = 3 }

describe("Adam", function()
  it("takes one step as the formula worked by hand, bias correction included", function()
    local e = param({ 1.0 })
    local opt = faceid.Adam({ e }, { lr = 0.1 })
    e.grad:fill_(0.5)
    opt:step()
    -- m = 0.1 * 0.5 = 0.05, v = 0.001 * 0.25 = 0.00025
    -- m_hat = 0.05 / (1 - 0.9) = 0.5, v_hat = 0.00025 / (1 - 0.999) = 0.25
    -- p = 1 - 0.1 * 0.5 / (sqrt(0.25) + 1e-8) = 1 - 0.099999998 = 0.900000002
    assert.are.equal(f32(0.900000002), e.param:get(1))
    local s = opt:state()
    assert.are.equal(f32(0.05), s["adam.m"]:get(1))
    assert.are.equal(f32(0.00025), s["adam.v"]:get(1))
    assert.are.equal(1, s.step)
    assert.are.equal(1, opt:step_count())
    -- second step with beta1 lowered to 0.8 between the steps: the bias
    -- correction uses the current beta1, 1 - 0.8^2 = 0.36 (as torch does)
    opt.beta1 = 0.8
    e.grad:fill_(-0.25)
    opt:step()
    local m = 0.8 * f32(0.05) + 0.2 * -0.25         -- -0.01
    local v = 0.999 * f32(0.00025) + 0.001 * 0.0625 -- 0.00031225
    close(m, -0.01, 1e-6)
    close(v, 0.00031225, 1e-6)
    local p = f32(0.900000002) - 0.1 * (m / 0.36) / (math.sqrt(v) / math.sqrt(1 - 0.999 ^ 2) + 1e-8)
    close(p, 0.9070283, 1e-6, "by hand") -- 0.9 + 0.1 * 0.0277778 / 0.3952254
    close(e.param:get(1), p, 1e-7, "second step")
  end)

  it("adds L2 decay to the gradient (decoupled = false) or shrinks the weight (AdamW)", function()
    local e = param({ 1.0 })
    local opt = faceid.Adam({ e }, { lr = 0.1, weight_decay = 0.1, decoupled = false })
    e.grad:fill_(0.5)
    opt:step()
    -- g = 0.5 + 0.1 * 1 = 0.6: m = 0.06, v = 0.00036; the first step is lr * sign
    assert.are.equal(f32(0.06), opt:state()["adam.m"]:get(1))
    assert.are.equal(f32(0.00036), opt:state()["adam.v"]:get(1))
    close(e.param:get(1), 0.9, 1e-7)
    local w = param({ 1.0 })
    local adamw = faceid.Adam({ w }, { lr = 0.1, weight_decay = 0.1 })
    w.grad:fill_(0.5)
    adamw:step()
    -- p = 1 * (1 - 0.1 * 0.1) - 0.1 * 0.5 / (0.5 + 1e-8) = 0.99 - 0.1 = 0.89
    close(w.param:get(1), 0.89, 1e-7)
    assert.are.equal(f32(0.05), adamw:state()["adam.m"]:get(1))
  end)

  it("decays only conv and linear weights of a DenseNet unless decay_all", function()
    for _, decay_all in ipairs({ false, true }) do
      local net = faceid.DenseNet(small_cfg)
      local before = {}
      for i, p in ipairs(net:parameters()) do
        p.param:add_(0.25) -- no zeros, so every decay shows
        before[i] = p.param:clone()
      end
      net:zero_grad()
      -- zero gradient: the moments stay 0, only the decay moves weights
      local opt = faceid.Adam(net, { lr = 0.1, weight_decay = 0.5, decay_all = decay_all })
      opt:step()
      for i, p in ipairs(net:parameters()) do
        local decayed = decay_all or p.kind == "conv" or p.kind == "linear_weight"
        local want = decayed and before[i] * 0.95 or before[i]
        assert.is_true(p.param:allclose(want, 1e-6, 0), p.name)
      end
    end
  end)

  for _, name in ipairs({ "adam", "adam_l2", "adamw", "adamw_all" }) do
    it("follows torch.optim for five steps: " .. name, function()
      local e1, e2 = param(torch_ref.p1, true), param(torch_ref.p2, false)
      local t1, t2 = faceid.tensor(torch_ref.t1), faceid.tensor(torch_ref.t2)
      local opts = ({
        adam = { lr = 0.1 },
        adam_l2 = { lr = 0.05, beta2 = 0.99, weight_decay = 0.1, decoupled = false },
        adamw = { lr = 0.1, beta1 = 0.85, beta2 = 0.99, eps = 1e-3, weight_decay = 0.2 },
        adamw_all = { lr = 0.1, beta1 = 0.85, beta2 = 0.99, eps = 1e-3, weight_decay = 0.2, decay_all = true },
      })[name]
      local opt = faceid.Adam({ e1, e2 }, opts)
      for k, want in ipairs(torch_ref.optim[name]) do
        if name == "adam_l2" then
          opt.lr = 0.05 * k
          opt.beta1 = 0.95 - 0.02 * k
        end
        e1.grad:copy(e1.param - t1)
        e2.grad:copy(e2.param - t2)
        opt:step()
        local got = e1.param:totable()
        for _, v in ipairs(e2.param:totable()) do got[#got + 1] = v end
        for i = 1, #want do close(got[i], want[i], 1e-6, ("%s step %d value %d"):format(name, k, i)) end
      end
    end)
  end
end)

describe("SGD", function()
  it("takes steps as the formulas worked by hand", function()
    local e = param({ 2.0 })
    local opt = faceid.SGD({ e }, { lr = 0.1, momentum = 0.9, weight_decay = 0.5 })
    e.grad:fill_(1.0)
    opt:step()
    -- d = 1 + 0.5 * 2 = 2; the buffer starts as d; p = 2 - 0.1 * 2 = 1.8
    close(e.param:get(1), 1.8, 1e-7)
    assert.are.equal(2, opt:state()["sgd.momentum"]:get(1))
    opt:step()
    -- d = 1 + 0.5 * 1.8 = 1.9; buf = 0.9 * 2 + 1.9 = 3.7; p = 1.8 - 0.37 = 1.43
    close(e.param:get(1), 1.43, 1e-6)
    local n = param({ 2.0 })
    local nes = faceid.SGD({ n }, { lr = 0.1, momentum = 0.5, nesterov = true })
    n.grad:fill_(1.0)
    nes:step()
    -- buf = 1; d = 1 + 0.5 * 1 = 1.5; p = 2 - 0.15
    close(n.param:get(1), 1.85, 1e-7)
  end)

  it("keeps no momentum buffer without momentum", function()
    local e = param({ 2.0 })
    local opt = faceid.SGD({ e }, { lr = 0.5 })
    e.grad:fill_(1.0)
    opt:step()
    assert.are.equal(1.5, e.param:get(1))
    assert.is_nil(opt:state()["sgd.momentum"])
    assert.are.equal(1, opt:state().step)
  end)

  for _, name in ipairs({ "sgd_nesterov", "sgd_dampening", "sgd_all" }) do
    it("follows torch.optim for five steps: " .. name, function()
      local e1, e2 = param(torch_ref.p1, true), param(torch_ref.p2, false)
      local t1, t2 = faceid.tensor(torch_ref.t1), faceid.tensor(torch_ref.t2)
      local opts = ({
        sgd_nesterov = { lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 0.01 },
        sgd_dampening = { lr = 0.2, momentum = 0.5, dampening = 0.1 },
        sgd_all = { lr = 0.1, weight_decay = 0.1, decay_all = true },
      })[name]
      local opt = faceid.SGD({ e1, e2 }, opts)
      for k, want in ipairs(torch_ref.optim[name]) do
        e1.grad:copy(e1.param - t1)
        e2.grad:copy(e2.param - t2)
        opt:step()
        local got = e1.param:totable()
        for _, v in ipairs(e2.param:totable()) do got[#got + 1] = v end
        for i = 1, #want do close(got[i], want[i], 1e-6, ("%s step %d value %d"):format(name, k, i)) end
      end
    end)
  end
end)

describe("optimizer hyper-parameters", function()
  it("reads and writes them as fields, checked", function()
    local opt = faceid.Adam({ param({ 1 }) })
    assert.are.equal(1e-3, opt.lr)
    assert.are.equal(0.9, opt.beta1)
    assert.are.equal(0.999, opt.beta2)
    assert.are.equal(1e-8, opt.eps)
    assert.are.equal(0, opt.weight_decay)
    assert.is_true(opt.decoupled)
    assert.is_false(opt.decay_all)
    assert.are.equal("Adam", opt.kind)
    opt.lr = 3e-4
    opt.beta1 = 0.85
    assert.are.equal(3e-4, opt.lr)
    assert.are.equal(0.85, opt.beta1)
    assert.error_matches(function() opt.lr = -1 end, "Adam: lr must be a finite number >= 0, got %-1")
    assert.error_matches(function() opt.lr = 0 / 0 end, "lr must be a finite number")
    assert.error_matches(function() opt.beta1 = 1 end, "beta1 must be in %[0, 1%)")
    assert.error_matches(function() opt.beta2 = "0.9" end, "'beta2' must be a number, got string")
    assert.error_matches(function() opt.decoupled = 1 end, "'decoupled' must be true or false")
    assert.error_matches(function() opt.momentum = 0.9 end, "unknown hyper%-parameter 'momentum'")
    assert.are.equal(3e-4, opt.lr)
    assert.are.equal(0.85, opt.beta1)
    assert.is_nil(opt.nonexistent)
  end)

  it("sets several at once, all or nothing", function()
    local opt = faceid.SGD({ param({ 1 }) }, { momentum = 0.9, nesterov = true })
    assert.error_matches(function() opt.momentum = 0 end, "nesterov needs momentum > 0")
    assert.error_matches(function() opt:set({ lr = 0.5, momentum = -1 }) end, "momentum must be")
    assert.are.equal(1e-3, opt.lr)
    opt:set({ lr = 0.5, momentum = 0, nesterov = false })
    assert.are.same({ lr = 0.5, momentum = 0, dampening = 0, nesterov = false, weight_decay = 0,
      decay_all = false }, opt:options())
    assert.error_matches(function() opt:set({ beta1 = 0.9 }) end, "unknown hyper%-parameter 'beta1'")
  end)

  it("checks construction", function()
    local e = param({ 1 })
    assert.error_matches(function() faceid.Adam({ e }, { lr = 1, betas = 0.9 }) end, "faceid.Adam: unknown hyper%-parameter 'betas'")
    assert.error_matches(function() faceid.SGD({ e }, { nesterov = true }) end, "nesterov needs momentum > 0")
    assert.error_matches(function() faceid.SGD({ e }, { momentum = 0.9, dampening = 2 }) end, "dampening must be in")
    assert.error_matches(function() faceid.Adam({}) end, "the parameter list is empty")
    assert.error_matches(function() faceid.Adam(5) end, "expected a faceid.DenseNet or a list")
    assert.error_matches(function() faceid.Adam({ e }, 5) end, "options must be a table")
    assert.error_matches(function() faceid.Adam({ { param = e.param } }) end, "parameter 1: 'grad' must be a tensor, got nil")
    assert.error_matches(function() faceid.Adam({ e, { param = faceid.zeros(2), grad = faceid.zeros(3) } }) end,
      "parameter 2: param is 2 but grad is 3")
    assert.error_matches(function() faceid.Adam({ { param = e.param, grad = e.param } }) end, "share memory")
    assert.error_matches(function() faceid.Adam({ { param = e.param, grad = e.grad, decay = 1 } }) end,
      "'decay' must be true or false")
    assert.error_matches(function() faceid.Adam({ { param = e.param, grad = e.grad, lr = 1 } }) end,
      "unknown field 'lr'")
    local m = faceid.zeros(2, 3)
    assert.error_matches(function() faceid.Adam({ { param = m:t(), grad = faceid.zeros(3, 2) } }) end,
      "'param' must be contiguous")
    assert.matches("^faceid.SGD%(lr=0.001, momentum=0, dampening=0, nesterov=false, weight_decay=0, " ..
      "decay_all=false; 1 parameters in 1 tensors, step 0%)$", tostring(faceid.SGD({ e })))
  end)

  -- over a network the step is split over its threads (densenet121: enough
  -- values to pass the pool's grain); every value's update is its own, so
  -- the bits are those of one thread
  it("steps a network on its threads as it steps the same values serially", function()
    for _, kind in ipairs({ "Adam", "SGD" }) do
      local net = faceid.DenseNet.densenet121({ embedding = 8, input = 32 })
      assert.are.equal(3, net:threads(3))
      local g, list = faceid.Generator(3), {}
      for i, p in ipairs(net:parameters()) do
        p.grad:copy(faceid.randn(g, p.grad:size()))
        list[i] = { param = p.param:clone(), grad = p.grad:clone() }
      end
      local opts = kind == "Adam" and { lr = 0.01, weight_decay = 0.1, decay_all = true } or
        { lr = 0.01, momentum = 0.9, weight_decay = 0.1, decay_all = true }
      local on_net, serial = faceid[kind](net, opts), faceid[kind](list, opts)
      for _ = 1, 3 do
        on_net:step()
        serial:step()
      end
      for i, p in ipairs(net:parameters()) do
        assert.is_true(p.param:equal(list[i].param), kind .. " " .. p.name)
      end
      net:close()
    end
  end)

  it("accepts net:parameters() as a list", function()
    local net = faceid.DenseNet(small_cfg)
    local opt = faceid.Adam(net:parameters())
    assert.are.equal(net:num_parameters(), opt:num_parameters())
    assert.are.equal(net:num_parameters(), faceid.Adam(net):num_parameters())
  end)

  it("zeroes the gradients it reads", function()
    local e = param({ 1, 2 })
    e.grad:fill_(3)
    faceid.SGD({ e }):zero_grad()
    assert.are.same({ 0, 0 }, e.grad:totable())
  end)

  it("refuses to touch closed networks and tensors", function()
    local net = faceid.DenseNet(small_cfg)
    local opt = faceid.Adam(net)
    net:close()
    assert.error_matches(function() opt:step() end, "Adam:step: the network has been closed")
    local e = param({ 1 })
    local sgd = faceid.SGD({ e })
    e.grad:close()
    assert.error_matches(function() sgd:step() end, "SGD:step: parameter 1: 'grad' has been closed")
    sgd:close()
    sgd:close()
    assert.error_matches(function() sgd:step() end, "closed")
    assert.are.equal("faceid.Optimizer(closed)", tostring(sgd))
  end)
end)

describe("optimizer state", function()
  it("round-trips and refuses bad tables", function()
    local e = param({ 1, 2, 3 })
    local opt = faceid.Adam({ e })
    e.grad:fill_(1)
    opt:step()
    opt:step()
    local s = opt:state()
    local other = faceid.Adam({ param({ 1, 2, 3 }) })
    other:load_state(s)
    assert.are.equal(2, other:step_count())
    assert.is_true(other:state()["adam.m"]:equal(s["adam.m"]))
    assert.is_true(other:state()["adam.v"]:equal(s["adam.v"]))
    -- the state is a copy: later steps do not change it
    opt:step()
    assert.are.equal(2, s.step)
    local function with(changes)
      local t = { ["adam.m"] = s["adam.m"], ["adam.v"] = s["adam.v"], step = s.step }
      for k, v in pairs(changes) do
        if v == "nil" then t[k] = nil else t[k] = v end
      end
      return t
    end
    local fresh = faceid.Adam({ param({ 1, 2, 3 }) })
    assert.error_matches(function() fresh:load_state(with({ ["adam.v"] = "nil" })) end, "the state has no 'adam.v'")
    assert.error_matches(function() fresh:load_state(with({ ["adam.x"] = faceid.zeros(3) })) end,
      "unknown state entry 'adam.x'")
    assert.error_matches(function() fresh:load_state(with({ ["adam.m"] = faceid.zeros(4) })) end,
      "'adam.m' holds 4 values but the parameters hold 3")
    assert.error_matches(function() fresh:load_state(with({ ["adam.v"] = faceid.tensor({ 1, -1, 1 }) })) end,
      "'adam.v' must hold values >= 0")
    assert.error_matches(function() fresh:load_state(with({ step = -1 })) end, "'step' must be an integer >= 0")
    assert.error_matches(function() fresh:load_state(with({ step = 1.5 })) end, "'step' must be an integer >= 0")
    assert.error_matches(function() fresh:load_state(with({ step = "nil" })) end, "needs 'step'")
    assert.error_matches(function() fresh:load_state(with({ step = faceid.zeros(2) })) end, "'step' must hold one value")
    assert.are.equal(0, fresh:step_count())
    assert.are.equal(0, fresh:state()["adam.m"]:abs():sum())
    -- other keys (a whole checkpoint) are ignored; step may be a tensor
    fresh:load_state(with({ ["features.conv0.weight"] = faceid.zeros(1), step = faceid.tensor({ 7 }) }))
    assert.are.equal(7, fresh:step_count())
    -- SGD: the buffer is optional
    local sgd = faceid.SGD({ param({ 1, 2, 3 }) }, { momentum = 0.9 })
    sgd:load_state({ step = 3, ["sgd.momentum"] = faceid.tensor({ 1, 2, 3 }) })
    assert.are.same({ 1, 2, 3 }, sgd:state()["sgd.momentum"]:totable())
    sgd:load_state({ step = 0 })
    assert.is_nil(sgd:state()["sgd.momentum"])
    assert.error_matches(function() sgd:load_state({ step = 0, ["adam.m"] = faceid.zeros(3), ["sgd.m"] = 1 }) end,
      "unknown state entry 'sgd.m'")
  end)

  -- a seeded batch of pairs for step t: 2N images, alternating labels
  local function batch(t)
    local gen = faceid.Generator(1000 + t)
    return faceid.randn(gen, 8, 2, 8, 8), faceid.tensor({ 0, 1, 0, 1 })
  end

  local function train(net, opt, sched, loss, steps)
    local last
    for _ = 1, steps do
      opt:set(sched(opt:step_count()))
      local x, y = batch(opt:step_count())
      net:zero_grad()
      last = loss:forward(net:forward(x), y)
      net:backward(loss:backward())
      opt:step()
    end
    return last
  end

  local function flat_values(net)
    local p = net:flat()
    return p:totable()
  end

  it("resumes a DenseNet run exactly from a checkpoint", function()
    local dir = helper.tmpdir()
    local opts = { lr = 1e-3, beta2 = 0.99, weight_decay = 1e-2 }
    local sched = faceid.schedule.seed({ steps_per_epoch = 1 })
    local loss = faceid.ContrastiveLoss()

    local ref_net = faceid.DenseNet(small_cfg)
    local ref_opt = faceid.Adam(ref_net, opts)
    train(ref_net, ref_opt, sched, loss, 6)

    local net = faceid.DenseNet(small_cfg)
    local opt = faceid.Adam(net, opts)
    train(net, opt, sched, loss, 3)
    assert.is_true(net:save(dir .. "/model.safetensors"))
    local s = opt:state()
    assert.is_true(faceid.save(dir .. "/optim.safetensors",
      { ["adam.m"] = s["adam.m"], ["adam.v"] = s["adam.v"], step = faceid.tensor({ s.step }) },
      { dtypes = { step = "I64" }, scalars = { step = true } }))
    net:close()
    opt:close()

    local net2 = assert(faceid.DenseNet.load(dir .. "/model.safetensors", { input = 8 }))
    local opt2 = faceid.Adam(net2, opts)
    opt2:load_state(assert(faceid.load(dir .. "/optim.safetensors")))
    assert.are.equal(3, opt2:step_count())
    -- without the optimizer state the run would differ (the test can fail)
    local net3 = assert(faceid.DenseNet.load(dir .. "/model.safetensors", { input = 8 }))
    local opt3 = faceid.Adam(net3, opts)
    opt3:load_state({ step = 3, ["adam.m"] = faceid.zeros(opt3:num_parameters()),
      ["adam.v"] = faceid.zeros(opt3:num_parameters()) })
    train(net3, opt3, sched, loss, 3)
    train(net2, opt2, sched, loss, 3)
    helper.rmtree(dir)

    local want, got, other = flat_values(ref_net), flat_values(net2), flat_values(net3)
    assert.are.equal(#want, #got)
    local same, differ = true, false
    for i = 1, #want do
      if got[i] ~= want[i] then same = false end
      if other[i] ~= want[i] then differ = true end
    end
    assert.is_true(same, "resumed parameters differ from the uninterrupted run")
    assert.is_true(differ)
    local a, b = ref_opt:state(), opt2:state()
    assert.is_true(a["adam.m"]:equal(b["adam.m"]))
    assert.is_true(a["adam.v"]:equal(b["adam.v"]))
    assert.are.equal(a.step, b.step)
  end)

  it("lowers the loss of a small DenseNet on a fixed batch", function()
    local net = faceid.DenseNet(small_cfg)
    local opt = faceid.Adam(net, { lr = 1e-2 })
    local loss = faceid.ContrastiveLoss()
    local gen = faceid.Generator(3)
    local x, y = faceid.randn(gen, 8, 2, 8, 8), faceid.tensor({ 0, 1, 0, 1 })
    local first
    for i = 1, 15 do
      net:zero_grad()
      local l = loss:forward(net:forward(x), y)
      first = first or l
      net:backward(loss:backward())
      opt:step()
      if i == 15 then assert.is_true(l < 0.5 * first, ("loss %g -> %g"):format(first, l)) end
    end
  end)
end)
