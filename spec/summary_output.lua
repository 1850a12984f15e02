-- busted output handler: the usual terminal report, then one closing line
-- "N passed, N failed, N skipped" counted from busted's own results
-- (errors count as failed), which make test and .ci/run rely on.
return function(options)
  local busted = require("busted")
  local handler = require("busted.outputHandlers.utfTerminal")(options)
  busted.subscribe({ "suite", "end" }, function()
    io.write(string.format("%d passed, %d failed, %d skipped\n",
      handler.successesCount, handler.failuresCount + handler.errorsCount,
      handler.pendingsCount))
    io.flush()
    return nil, true
  end, { priority = 2 })
  return handler
end
