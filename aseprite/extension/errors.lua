-- Error codes (docs/design.md "Error taxonomy", plus the client's own) -> words an
-- artist can act on. The server's message is appended as detail, because it
-- often names the exact model, LoRA or limit involved.

local M = {}

-- Codes the client raises itself, never sent by the server.
M.CLIENT = {
  SERVER_UNREACHABLE = "SERVER_UNREACHABLE",
  CONNECTION_LOST = "CONNECTION_LOST",
  BAD_FRAME = "BAD_FRAME",
  BAD_IMAGE = "BAD_IMAGE",
  PERMISSION_DENIED = "PERMISSION_DENIED",
  DOCUMENT_BUSY = "DOCUMENT_BUSY",
}

-- Each entry is a function of the context table ({model=…, lora=…, engine=…,
-- url=…}) so that hints can name the thing involved.
local TEXT = {
  INVALID_REQUEST = function() return "The server rejected the request settings." end,
  UNAUTHORIZED = function() return "The server needs an API key for this (PIXELAI_API_KEY)." end,
  FORBIDDEN = function() return "The server refused this request (Host/Origin not allowed, or admin only)." end,
  NOT_FOUND = function() return "The server does not know this job any more." end,
  MODEL_NOT_FOUND = function(c)
    return ("Model '%s' is not registered on the server. Pick another model or register it (POST /models)."):format(c.model or "?")
  end,
  LORA_NOT_FOUND = function(c)
    return ("LoRA '%s' is not registered on the server."):format(c.lora or "?")
  end,
  JOB_NOT_CANCELLABLE = function() return "The job has already finished; it can no longer be cancelled." end,
  JOB_NOT_FINISHED = function() return "The job is still queued or running; cancel it before deleting it." end,
  MODEL_NOT_CONVERTED = function(c)
    local name = c.model or "<name>"
    return ("Model '%s' has no MLX version yet — convert it first: POST /models/%s/conversions "
      .. "or python scripts/convert_to_mlx.py %s (or choose the torch engine)."):format(name, name, name)
  end,
  PAYLOAD_TOO_LARGE = function() return "The request is too large for the server (try a smaller size)." end,
  LORA_UNSUPPORTED_ENGINE = function(c)
    return ("The %s engine cannot apply LoRAs. Choose LoRA 'None' or switch to the torch engine."):format(c.engine or "chosen")
  end,
  RATE_LIMITED = function() return "Too many requests right now; wait a moment and try again." end,
  TOO_MANY_CONNECTIONS = function()
    return "Too many PixelAI windows are connected to the server from this machine; close one and try again."
  end,
  TOO_MANY_WATCHES = function() return "This connection already follows as many jobs as the server allows; wait for one to finish." end,
  ENGINE_INTERNAL = function() return "The generation engine crashed or misbehaved; see the server log. Try again." end,
  HASH_MISMATCH = function() return "Model files failed their integrity check; re-download or re-convert the model." end,
  CONVERSION_FAILED = function() return "Converting the model to MLX failed; see the server log." end,
  CANCELLED = function() return "Generation cancelled." end,
  ENGINE_UNAVAILABLE = function(c)
    return ("The %s engine is not available on the server's machine. Choose another engine."):format(c.engine or "chosen")
  end,
  TIMEOUT = function() return "The engine took too long and was stopped. Try fewer steps or a smaller size." end,
  CUDA_OOM = function() return "The GPU ran out of memory. Try a smaller size, fewer steps, or close other GPU programs." end,
  MPS_OOM = function() return "The Mac GPU ran out of memory. Try a smaller size or close other apps." end,

  SERVER_UNREACHABLE = function(c)
    return ("PixelAI server not reachable at %s — start it with `make start`"):format(c.url or "ws://127.0.0.1:5000/ws")
  end,
  CONNECTION_LOST = function(c)
    return ("Lost the connection to the PixelAI server at %s. The job may still finish there; start the server "
      .. "with `make start` and try again."):format(c.url or "the server")
  end,
  PERMISSION_DENIED = function(c)
    return ("PixelAI was not allowed to connect to %s: Aseprite asked and the answer was no. Press Generate to be "
      .. "asked again and choose Allow (tick \"Don't show again\" to stop the question).")
      :format(c.url or "the server")
  end,
  DOCUMENT_BUSY = function()
    return "The sprite is busy (another command is editing it); the result will be placed as soon as it is free."
  end,
  BAD_FRAME = function() return "The server sent a message this extension does not understand (version mismatch?)." end,
  BAD_IMAGE = function() return "The server sent an image that does not match its stated size." end,
}

function M.known(code)
  return TEXT[code] ~= nil
end

-- Plain words for an error. `message` is the server's own text (optional).
function M.describe(code, message, context)
  local words
  local text = TEXT[code]
  if text then
    words = text(context or {})
  else
    words = ("Server error %s."):format(tostring(code or "UNKNOWN"))
  end
  if type(message) == "string" and message ~= "" and code ~= "SERVER_UNREACHABLE" then
    words = words .. " (" .. message .. ")"
  end
  return words
end

return M
