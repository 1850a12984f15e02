-- ContrastiveLoss: hand-computed values and gradients, zero distance,
-- the margin, finite-difference gradient checks of both forms, errors.
local faceid = require("faceid")
local helper = require("helper")

local close = helper.close_numbers(1e-6)

local function finite(x) return x == x and x > -math.huge and x < math.huge end

-- every element of tensor t (2-D) against the nested list want
local function all_close(t, want, tol, what)
  local got = t:totable()
  for i = 1, #want do
    for j = 1, #want[i] do close(got[i][j], want[i][j], tol, ("%s[%d][%d]"):format(what or "t", i, j)) end
  end
end

describe("ContrastiveLoss forward", function()
  -- three pairs: same at distance 5; different at distance 0; different at
  -- distance 1 (inside the margin 2)
  local a = faceid.tensor({ { 0, 0 }, { 1, 1 }, { 0, 0 } })
  local b = faceid.tensor({ { 3, 4 }, { 1, 1 }, { 0.6, 0.8 } })
  local y = faceid.tensor({ 0, 1, 1 })

  it("matches the formula worked by hand", function()
    local loss = faceid.ContrastiveLoss()
    local eps = 1e-7
    -- pair 1: D^2 = 25 + eps, L = D^2 / 2
    local l1 = (25 + eps) / 2
    -- pair 2: D = sqrt(eps) = 3.16227766e-4, L = (2 - D)^2 / 2 = 2 - 2D + D^2/2 = 1.99936759...
    local d2 = math.sqrt(eps)
    local l2 = (2 - d2) ^ 2 / 2
    close(l2, 1.9993675945, 1e-9, "l2 by hand")
    -- pair 3: D = sqrt(1 + eps) = 1.00000005, L = (2 - D)^2 / 2 = 0.49999995
    local l3 = (2 - math.sqrt(1 + eps)) ^ 2 / 2
    close(l3, 0.49999995, 1e-8, "l3 by hand")
    close(loss:forward(a, b, y), (l1 + l2 + l3) / 3, 1e-7, "loss")
    -- (12.50000005 + 1.9993675945 + 0.49999995) / 3
    close((l1 + l2 + l3) / 3, 4.9997891982, 1e-9, "mean by hand")
    local d = loss:distances():totable()
    close(d[1], 5, 1e-7, "D1")
    close(d[2], d2, 1e-6, "D2")
    close(d[3], 1, 1e-6, "D3")
  end)

  it("accepts the stacked 2N x D form with the same result", function()
    local loss = faceid.ContrastiveLoss()
    local pair = loss:forward(a, b, y)
    local stacked = loss:forward(faceid.cat({ a, b }, 1), y)
    assert.are.equal(pair, stacked)
  end)

  it("uses the margin and eps given, and live changes of them", function()
    local loss = faceid.ContrastiveLoss({ margin = 3.0, eps = 0 })
    assert.are.equal(3.0, loss.margin)
    assert.are.equal(0, loss.eps)
    -- same: 25/2; different at 0: 9/2; different at 1: 4/2
    close(loss:forward(a, b, y), (12.5 + 4.5 + 2) / 3, 1e-7)
    loss.margin = 1.5
    -- same: 25/2; 1.5^2/2; 0.5^2/2
    close(loss:forward(a, b, y), (12.5 + 1.125 + 0.125) / 3, 1e-7)
    assert.matches("margin=1.5", tostring(loss))
  end)

  it("gives zero loss to different pairs beyond the margin", function()
    local loss = faceid.ContrastiveLoss()
    close(loss:forward(faceid.tensor({ { 0, 0 } }), faceid.tensor({ { 3, 4 } }), faceid.tensor({ 1 })), 0, 0)
  end)

  it("reads strided embeddings", function()
    local loss = faceid.ContrastiveLoss()
    local at = a:t():contiguous():t() -- same values, column-major strides
    assert.is_false(at:is_contiguous())
    assert.are.equal(loss:forward(a, b, y), loss:forward(at, b, y))
    local labels = faceid.tensor({ { 0, 9 }, { 1, 9 }, { 1, 9 } }):select(2, 1)
    assert.are.equal(loss:forward(a, b, y), loss:forward(a, b, labels))
  end)
end)

describe("ContrastiveLoss backward", function()
  local a = faceid.tensor({ { 0, 0 }, { 1, 1 }, { 0, 0 } })
  local b = faceid.tensor({ { 3, 4 }, { 1, 1 }, { 0.6, 0.8 } })
  local y = faceid.tensor({ 0, 1, 1 })

  it("matches gradients worked by hand", function()
    local loss = faceid.ContrastiveLoss()
    loss:forward(a, b, y)
    local ga, gb = loss:backward()
    -- same pair: dL/da = (a - b) / N = (-3, -4) / 3
    -- different pair at D = 0: zero (a - b = 0)
    -- different pair at D ~ 1: -(m - D) / D (a - b) / N = -(1)(-0.6, -0.8) / 3
    local want = { { -1, -4 / 3 }, { 0, 0 }, { 0.2, 0.8 / 3 } }
    all_close(ga, want, 1e-6, "grad_a")
    for _, r in ipairs(want) do r[1], r[2] = -r[1], -r[2] end
    all_close(gb, want, 1e-6, "grad_b")
  end)

  it("returns one 2N x D gradient after a stacked forward", function()
    local loss = faceid.ContrastiveLoss()
    loss:forward(a, b, y)
    local ga, gb = loss:backward()
    loss:forward(faceid.cat({ a, b }, 1), y)
    local g, none = loss:backward()
    assert.is_nil(none)
    assert.are.same({ 6, 2 }, g:size())
    assert.is_true(g:narrow(1, 1, 3):equal(ga))
    assert.is_true(g:narrow(1, 4, 3):equal(gb))
  end)

  it("scales by the output gradient", function()
    local loss = faceid.ContrastiveLoss()
    loss:forward(a, b, y)
    local ga = loss:backward()
    local ga2 = loss:backward(2.5)
    all_close(ga2, (ga * 2.5):totable(), 1e-7, "scaled")
  end)

  it("is finite at zero distance, with eps and without", function()
    for _, eps in ipairs({ 1e-7, 0 }) do
      local loss = faceid.ContrastiveLoss({ eps = eps })
      local e = faceid.tensor({ { 0.5, -0.25, 1 }, { 0.5, -0.25, 1 } })
      local l = loss:forward(e, e, faceid.tensor({ 0, 1 }))
      assert.is_true(finite(l))
      -- same pair: eps/2; different pair: (2 - sqrt(eps))^2 / 2
      close(l, (eps / 2 + (2 - math.sqrt(eps)) ^ 2 / 2) / 2, 1e-7)
      local ga, gb = loss:backward()
      for _, g in ipairs({ ga, gb }) do
        for _, row in ipairs(g:totable()) do
          for _, v in ipairs(row) do assert.are.equal(0, v) end
        end
      end
    end
  end)

  it("gives exactly zero gradient to different pairs beyond the margin", function()
    local loss = faceid.ContrastiveLoss()
    loss:forward(faceid.tensor({ { 0, 0 }, { 0, 0 } }), faceid.tensor({ { 3, 4 }, { 1, 1 } }), faceid.tensor({ 1, 1 }))
    local ga = loss:backward():totable()
    assert.are.same({ 0, 0 }, ga[1])
    assert.are_not.equal(0, ga[2][1]) -- the pair at sqrt(2) < 2 still pushes
  end)

  -- central differences of the loss (computed in double from the float
  -- inputs) against backward, with pairs kept away from the kink D = m
  local function fd_check(stacked)
    local gen = faceid.Generator(7)
    local n, d = 6, 4
    local ea, eb = faceid.randn(gen, n, d) * 0.5, faceid.randn(gen, n, d) * 0.5
    local y = faceid.tensor({ 0, 1, 1, 0, 1, 1 })
    -- pair 3 far beyond the margin, pair 6 identical (D = sqrt(eps))
    ea[3] = faceid.tensor({ 3, 3, 3, 3 })
    eb[6] = ea[6]
    local loss = faceid.ContrastiveLoss()
    local emb = faceid.cat({ ea, eb }, 1)
    local function f()
      if stacked then return loss:forward(emb, y) end
      return loss:forward(emb:narrow(1, 1, n), emb:narrow(1, n + 1, n), y)
    end
    f()
    local labels = y:totable()
    for i, dist in ipairs(loss:distances():totable()) do
      if labels[i] == 1 then
        assert.is_true(math.abs(dist - 2) > 0.05, "pair " .. i .. " is too close to the margin")
      end
    end
    local g
    if stacked then
      g = loss:backward()
    else
      local ga, gb = loss:backward()
      g = faceid.cat({ ga, gb }, 1)
    end
    g = g:totable()
    local h = 1e-3
    for i = 1, 2 * n do
      for j = 1, d do
        local x = emb:get(i, j)
        emb:set(i, j, x + h)
        local up = f()
        emb:set(i, j, x - h)
        local down = f()
        emb:set(i, j, x)
        local num = (up - down) / (2 * h)
        assert.is_true(math.abs(num - g[i][j]) <= 1e-3 * math.max(1, math.abs(num)),
          ("d/demb[%d][%d]: analytic %.8g, numeric %.8g"):format(i, j, g[i][j], num))
      end
    end
  end

  it("passes a finite-difference check (two tensors)", function() fd_check(false) end)
  it("passes a finite-difference check (stacked)", function() fd_check(true) end)
end)

describe("ContrastiveLoss errors", function()
  local a = faceid.tensor({ { 0, 0 }, { 1, 1 } })
  local b = faceid.tensor({ { 3, 4 }, { 1, 1 } })

  it("refuses labels other than 0 and 1", function()
    local loss = faceid.ContrastiveLoss()
    assert.has_error(function() loss:forward(a, b, faceid.tensor({ 0, 0.5 })) end,
      "ContrastiveLoss:forward: label 2 is 0.5; labels must be 0 (same) or 1 (different)")
    assert.error_matches(function() loss:forward(a, b, faceid.tensor({ 2, 0 })) end, "label 1 is 2")
    assert.error_matches(function() loss:forward(a, b, faceid.tensor({ -1, 0 })) end, "label 1 is %-1")
    assert.error_matches(function() loss:forward(a, b, { 0, 1 }) end, "argument 3 must be a tensor")
    assert.error_matches(function() loss:forward(a, b, faceid.tensor({ 0, 1, 1 })) end,
      "labels is 3 but must be a 1%-D tensor of 2 labels")
    assert.error_matches(function() loss:forward(a, b, faceid.tensor({ { 0, 1 } })) end, "labels is 1x2")
    -- a failed forward leaves nothing to go back through
    assert.error_matches(function() loss:backward() end, "no forward")
  end)

  it("refuses mismatched or misshapen embeddings", function()
    local loss = faceid.ContrastiveLoss()
    local y = faceid.tensor({ 0, 1 })
    assert.error_matches(function() loss:forward(a, faceid.zeros(2, 3), y) end, "emb_b is 2x3 but must be 2x2")
    assert.error_matches(function() loss:forward(faceid.zeros(2), faceid.zeros(2), y) end, "emb_a is 2 but must be N x D")
    assert.error_matches(function() loss:forward(faceid.zeros(3, 2), faceid.tensor({ 0 })) end,
      "stacked embedding is 3x2 but must be 2N x D")
    assert.error_matches(function() loss:forward(a) end, "expected %(emb, labels%) or %(emb_a, emb_b, labels%)")
    assert.error_matches(function() loss:forward(a, b, y, y) end, "got 4 arguments")
  end)

  it("checks options and fields", function()
    assert.error_matches(function() faceid.ContrastiveLoss({ margn = 1 }) end, "unknown option 'margn'")
    assert.error_matches(function() faceid.ContrastiveLoss({ margin = 0 }) end, "'margin' must be a positive")
    assert.error_matches(function() faceid.ContrastiveLoss({ margin = 0 / 0 }) end, "'margin' must be a positive")
    assert.error_matches(function() faceid.ContrastiveLoss({ eps = -1 }) end, "'eps' must be a finite number >= 0")
    assert.error_matches(function() faceid.ContrastiveLoss({ eps = "1" }) end, "'eps' must be a number, got string")
    assert.error_matches(function() faceid.ContrastiveLoss(2) end, "options must be a table")
    local loss = faceid.ContrastiveLoss()
    assert.error_matches(function() loss.margin = -1 end, "'margin' must be a positive")
    assert.error_matches(function() loss.foo = 1 end, "cannot set 'foo'")
    assert.are.equal(2.0, loss.margin)
    assert.error_matches(function() loss:backward() end, "no forward")
    assert.error_matches(function() loss:distances() end, "no forward")
    loss:close()
    loss:close()
    assert.error_matches(function() loss:forward(a, b, faceid.tensor({ 0, 1 })) end, "closed")
    assert.are.equal("faceid.ContrastiveLoss(closed)", tostring(loss))
  end)
end)
