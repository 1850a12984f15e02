--- examples/lfw_eval.lua - the LFW protocol with the Lua API (what
-- `faceid eval --pairs --images` does): 10 folds of 300 same-person and 300
-- different-person pairs; for each fold the threshold that is best on the
-- other nine is applied to it; report mean +- std, then AUC, EER, TAR@FAR.
--
--   lua5.4 examples/lfw_eval.lua run/model.safetensors lfw/pairs.txt lfw/
--
-- Without LFW at hand, make a pairs file in the same format from any face
-- folder (people held out of training!) and evaluate on that:
--   faceid eval --model M --data DIR --save-pairs my_pairs.txt
--   lua5.4 examples/lfw_eval.lua M my_pairs.txt DIR
local faceid = require("faceid")

local model_path, pairs_txt, root = arg[1], arg[2], arg[3]
if not (model_path and pairs_txt and root) then
  io.stderr:write("usage: lua5.4 examples/lfw_eval.lua MODEL pairs.txt IMAGE_DIR\n")
  os.exit(2)
end

local net = assert(faceid.DenseNet.load(model_path))
local input = net:config().input

-- LFW names its files root/name/name_0001.jpg; other folders are read as
-- one folder per person and the pairs looked up by (person, number)
local ds, list = faceid.data.lfw_pairs(pairs_txt, root, { on_skip = function() end })
if not ds or #list == 0 or list.dropped > 0 then
  ds = assert(faceid.data.open(root))
  list = assert(faceid.pairs.load(pairs_txt, ds))
end
print(("%d pairs in %d folds"):format(#list, list.folds))

-- distances in evaluation mode, centre crops (faceid.train.distances)
local loader = faceid.augment.Loader(ds, { size = input })
local d, y = faceid.train.distances(net, loader, list)

local m = faceid.metrics
local k = m.kfold(d, y, { folds = list.fold })
print(("%d-fold accuracy %.4f +- %.4f"):format(k.folds, k.mean, k.std))
print(("AUC %.4f"):format(m.auc(d, y)))
print(("EER %.4f (threshold %.3f)"):format(m.eer(d, y)))
print(("TAR@FAR=1e-3 %.4f"):format((m.tar_at_far(d, y, 1e-3))))
