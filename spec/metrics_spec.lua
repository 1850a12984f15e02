-- faceid.metrics against cases worked by hand (the operating points, ROC,
-- AUC as the Mann-Whitney count, EER, TAR at FAR, k-fold), ties included.
local faceid = require("faceid")
local helper = require("helper")
local metrics = faceid.metrics

local close = helper.close_numbers(1e-12)

local function close_list(got, want, what)
  assert.are.equal(#want, #got, what)
  for i = 1, #want do close(got[i], want[i], 1e-12, ("%s[%d]"):format(what, i)) end
end

-- Case A, no ties. Sorted: 0.2 s, 0.5 s, 0.7 d, 0.9 d, 1.1 s, 1.4 d
-- (s = same, label 0; d = different, label 1)
local A = { d = { 0.2, 0.5, 0.9, 1.1, 1.4, 0.7 }, y = { 0, 0, 1, 0, 1, 1 } }
-- Case B, ties. Sorted: 0.2 s | 0.5 s, 0.5 d, 0.5 d | 1.0 s, 1.0 d
local B = { d = { 0.5, 0.5, 0.5, 1.0, 1.0, 0.2 }, y = { 0, 1, 1, 0, 1, 0 } }

describe("metrics.accuracy", function()
  it("predicts same below the threshold (1.0 by default)", function()
    -- accepted: 0.2 s, 0.5 s, 0.7 d, 0.9 d; rejected: 1.1 s, 1.4 d
    local acc, c = metrics.accuracy(A.d, A.y)
    assert.are.equal(0.5, acc)
    assert.are.same({ tp = 2, fp = 2, tn = 1, fn = 1 }, c)
    assert.are.equal(5 / 6, metrics.accuracy(A.d, A.y, 0.6))
    assert.are.equal(0.5, metrics.accuracy(A.d, A.y, 0))
  end)

  it("decides tied distances together, strictly below the threshold", function()
    -- at 0.5 only 0.2 is accepted: 1 s right + 3 d right
    assert.are.equal(4 / 6, metrics.accuracy(B.d, B.y, 0.5))
    -- just above 0.5 all three 0.5 pairs are accepted: 2 s + 1 d right
    assert.are.equal(3 / 6, metrics.accuracy(B.d, B.y, 0.5000001))
  end)

  it("accepts 1-D tensors", function()
    local acc = metrics.accuracy(faceid.tensor(A.d), faceid.tensor(A.y), 0.6)
    assert.are.equal(5 / 6, acc)
  end)
end)

describe("metrics.best_threshold", function()
  it("finds the operating point of highest accuracy", function()
    -- thresholds 0.2, 0.35, 0.6, 0.8, 1.0, 1.25, 2.4 are right 3, 4, 5, 4, 3, 4, 3 times
    local t, acc = metrics.best_threshold(A.d, A.y)
    close(t, 0.35 + 0.25)
    assert.are.equal(5 / 6, acc)
  end)

  it("handles ties and picks the smallest of equal thresholds", function()
    -- thresholds 0.2, 0.35, 0.75, 2.0 are right 3, 4, 3, 3 times
    local t, acc = metrics.best_threshold(B.d, B.y)
    close(t, 0.35)
    assert.are.equal(4 / 6, acc)
    -- 1 s, 2 d, 3 s, 4 d: 1.5 and 3.5 are both right 3 times
    t, acc = metrics.best_threshold({ 1, 2, 3, 4 }, { 0, 1, 0, 1 })
    assert.are.equal(1.5, t)
    assert.are.equal(0.75, acc)
    -- nothing to separate: all same, accept all (largest + 1)
    t, acc = metrics.best_threshold({ 2, 2 }, { 0, 0 })
    assert.are.equal(3, t)
    assert.are.equal(1, acc)
  end)
end)

describe("metrics.roc and metrics.auc", function()
  it("trace one point per distinct distance", function()
    local roc, auc = metrics.roc(A.d, A.y)
    close_list(roc.fpr, { 0, 0, 0, 1 / 3, 2 / 3, 2 / 3, 1 }, "fpr")
    close_list(roc.tpr, { 0, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 1, 1 }, "tpr")
    close_list(roc.thresholds, { 0.2, 0.35, 0.6, 0.8, 1.0, 1.25, 2.4 }, "thresholds")
    -- Mann-Whitney: same pairs closer than different ones: 3 + 3 + 1 of 9
    close(auc, 7 / 9)
    close(metrics.auc(A.d, A.y), 7 / 9)
  end)

  it("moves diagonally through ties and counts tied couples as one half", function()
    local roc, auc = metrics.roc(B.d, B.y)
    close_list(roc.fpr, { 0, 0, 2 / 3, 1 }, "fpr")
    close_list(roc.tpr, { 0, 1 / 3, 2 / 3, 1 }, "tpr")
    close_list(roc.thresholds, { 0.2, 0.35, 0.75, 2.0 }, "thresholds")
    -- 0.2 s beats 3 d; 0.5 s ties two 0.5 d (1) and beats 1.0 d (1);
    -- 1.0 s ties 1.0 d (0.5): 5.5 of 9
    close(auc, 11 / 18)
  end)

  it("is 1 for separated pairs, 0 for reversed ones, 0.5 for all tied", function()
    assert.are.equal(1, metrics.auc({ 0.1, 0.2, 0.9 }, { 0, 0, 1 }))
    assert.are.equal(0, metrics.auc({ 0.1, 0.2, 0.9 }, { 1, 1, 0 }))
    assert.are.equal(0.5, metrics.auc({ 1, 1, 1, 1 }, { 0, 1, 1, 0 }))
  end)
end)

describe("metrics.eer", function()
  it("is where FAR meets FRR on an operating point", function()
    -- point 3 (threshold 0.8): FAR = 1/3, FRR = 1 - 2/3 = 1/3
    local eer, t = metrics.eer(A.d, A.y)
    close(eer, 1 / 3)
    close(t, 0.8)
  end)

  it("interpolates between operating points", function()
    -- FAR - FRR is -2/3 at point 1 (0.35) and +1/3 at point 2 (0.75):
    -- 2/3 of the way, FAR = 2/3 * 2/3 = 4/9 = FRR = 2/3 - 2/3 * 1/3
    local eer, t = metrics.eer(B.d, B.y)
    close(eer, 4 / 9)
    close(t, 0.35 + 2 / 3 * 0.4)
  end)
end)

describe("metrics.tar_at_far", function()
  it("accepts the most same pairs within the allowed false accepts", function()
    local tar, t, far = metrics.tar_at_far(A.d, A.y)
    close(tar, 2 / 3)
    close(t, 0.6)
    assert.are.equal(0, far)
    tar, t, far = metrics.tar_at_far(A.d, A.y, 0.5)
    close(tar, 2 / 3)
    close(t, 0.8)
    close(far, 1 / 3)
    tar = metrics.tar_at_far(A.d, A.y, 1)
    assert.are.equal(1, tar)
    tar, t = metrics.tar_at_far(B.d, B.y, 1e-3)
    close(tar, 1 / 3)
    close(t, 0.35)
    -- ties cannot be split: accepting the 0.5 same pair accepts two different ones
    tar = metrics.tar_at_far(B.d, B.y, 0.6)
    close(tar, 1 / 3)
  end)
end)

describe("metrics.mean_distances", function()
  it("averages each kind of pair", function()
    local s, d = metrics.mean_distances(A.d, A.y)
    close(s, 0.6)
    close(d, 1.0)
    s, d = metrics.mean_distances({ 1, 3 }, { 0, 0 })
    assert.are.equal(2, s)
    assert.is_nil(d)
  end)
end)

describe("metrics.kfold", function()
  local d = { 0.1, 0.9, 0.4, 1.2, 0.3, 0.8, 1.5, 0.6 }
  local y = { 0, 1, 0, 1, 0, 1, 0, 1 }

  it("picks the threshold on the other folds (folds in order)", function()
    -- fold 1 = pairs 1-4, fold 2 = pairs 5-8.
    -- Fold 1 is tested with fold 2's best threshold: 0.3 s | 0.6 d, 0.8 d | 1.5 s
    -- gives 0.45 (3 of 4); on fold 1 it decides all 4 right.
    -- Fold 2 is tested with fold 1's: 0.1 s, 0.4 s | 0.9 d, 1.2 d gives 0.65;
    -- on fold 2 it rejects 1.5 s and accepts 0.6 d: 2 of 4.
    local r = metrics.kfold(d, y, { folds = 2 })
    assert.are.equal(2, r.folds)
    close_list(r.accuracies, { 1.0, 0.5 }, "accuracies")
    close_list(r.thresholds, { 0.45, 0.65 }, "thresholds")
    close(r.mean, 0.75)
    close(r.std, 0.25)
  end)

  it("takes folds given explicitly", function()
    -- odd pairs (all same) against even pairs (all different): fold 1 gets
    -- threshold 0.6 (accept nothing of fold 2), right 3 of 4; fold 2 gets
    -- 2.5 (accept all of fold 1), right 0 of 4
    local r = metrics.kfold(d, y, { folds = { 1, 2, 1, 2, 1, 2, 1, 2 } })
    close_list(r.accuracies, { 0.75, 0 }, "accuracies")
    close_list(r.thresholds, { 0.6, 2.5 }, "thresholds")
    close(r.mean, 0.375)
    close(r.std, 0.375)
    local t = metrics.kfold(faceid.tensor(d), faceid.tensor(y), { folds = faceid.tensor({ 1, 2, 1, 2, 1, 2, 1, 2 }) })
    close_list(t.accuracies, { 0.75, 0 }, "tensor accuracies")
  end)

  it("defaults to 10 folds in order (the LFW protocol)", function()
    local dd, yy = {}, {}
    for i = 1, 20 do
      dd[i] = (i % 2 == 0) and 1.5 + i / 100 or 0.5 + i / 100
      yy[i] = (i % 2 == 0) and 1 or 0
    end
    local r = metrics.kfold(dd, yy)
    assert.are.equal(10, r.folds)
    assert.are.equal(1, r.mean)
    assert.are.equal(0, r.std)
  end)
end)

describe("metrics.evaluate", function()
  it("collects every metric", function()
    local r = metrics.evaluate(A.d, A.y, { folds = 2, far = 0.5, threshold = 0.6 })
    assert.are.equal(6, r.n)
    assert.are.equal(3, r.same)
    assert.are.equal(3, r.different)
    assert.are.equal(5 / 6, r.accuracy)
    close(r.best_threshold, 0.6)
    assert.are.equal(5 / 6, r.best_accuracy)
    close(r.auc, 7 / 9)
    close(r.eer, 1 / 3)
    close(r.eer_threshold, 0.8)
    close(r.tar, 2 / 3)
    close(r.tar_threshold, 0.8)
    close(r.mean_same, 0.6)
    close(r.mean_different, 1.0)
    assert.are.same(metrics.kfold(A.d, A.y, { folds = 2 }), r.kfold)
    assert.is_nil(metrics.evaluate(A.d, A.y).kfold) -- 6 pairs < 10 folds
    assert.is_nil(metrics.evaluate(A.d, A.y, { folds = false }).kfold)
  end)
end)

describe("metrics errors", function()
  it("refuse bad inputs with clear messages", function()
    assert.error_matches(function() metrics.accuracy({ 1, 2 }, { 0, 2 }) end,
      "faceid.metrics.accuracy: label 2 is 2; labels must be 0 %(same%) or 1 %(different%)")
    assert.error_matches(function() metrics.accuracy({ 1, 2 }, { 0 }) end, "2 distances but 1 labels")
    assert.error_matches(function() metrics.auc({ 1, 0 / 0 }, { 0, 1 }) end, "distance 2 is")
    assert.error_matches(function() metrics.auc({}, {}) end, "no pairs")
    assert.error_matches(function() metrics.auc("x", { 0 }) end, "distances must be a list or a 1%-D tensor")
    assert.error_matches(function() metrics.auc(faceid.zeros(2, 2), { 0, 1 }) end, "1%-D tensor, got 2 dimensions")
    assert.error_matches(function() metrics.roc({ 1, 2 }, { 0, 0 }) end, "needs both same and different pairs")
    assert.error_matches(function() metrics.eer({ 1, 2 }, { 1, 1 }) end, "needs both")
    assert.error_matches(function() metrics.tar_at_far({ 1, 2 }, { 0, 1 }, 2) end, "far must be a number in %[0, 1%]")
    assert.error_matches(function() metrics.kfold({ 1, 2 }, { 0, 1 }) end, "10 folds for 2 pairs")
    assert.error_matches(function() metrics.kfold({ 1, 2, 3 }, { 0, 1, 0 }, { folds = { 1, 3, 1 } }) end, "fold 2 is empty")
    assert.error_matches(function() metrics.kfold({ 1, 2 }, { 0, 1 }, { folds = { 1, 1.5 } }) end, "fold number 2 is 1.5")
    assert.error_matches(function() metrics.kfold({ 1, 2 }, { 0, 1 }, { folds = 1 }) end, "at least 2")
    assert.error_matches(function() metrics.kfold({ 1, 2 }, { 0, 1 }, { fold = 2 }) end, "unknown option 'fold'")
    assert.error_matches(function() metrics.evaluate({ 1, 2 }, { 0, 1 }, { thresh = 2 }) end, "unknown option 'thresh'")
  end)
end)
