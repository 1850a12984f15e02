package = "faceid"
version = "scm-1"
source = {
   url = "git+file:///faceid",
}
description = {
   summary = "Train your own FaceID ConvNet: Siamese DenseNets with a contrastive loss, in Lua over a C core",
   detailed = [[
faceid trains face-embedding networks (DenseNet-BC towers of a Siamese pair,
contrastive loss) from Lua. Tensors, layers, losses and optimizers are
userdata backed by C kernels on OpenBLAS; data, schedules and the training
loop are plain Lua. Needs Debian's libopenblas-dev and libstb-dev.
]],
   license = "MIT",
}
dependencies = {
   "lua >= 5.4",
}
build = {
   type = "make",
   build_variables = {
      BUILD = "build-rock",
      CFLAGS = "$(CFLAGS)",
      LIBFLAG = "$(LIBFLAG)",
      LUA_INCDIR = "$(LUA_INCDIR)",
   },
   install_variables = {
      BUILD = "build-rock",
      INST_LIBDIR = "$(LIBDIR)",
      INST_LUADIR = "$(LUADIR)",
      INST_BINDIR = "$(BINDIR)",
   },
}
