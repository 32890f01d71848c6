-- Argo CD health of a tritonoperator.dev object (TritonServer, TritonModel), read from the status the
-- operator writes. One script for both kinds: they share the condition vocabulary.
-- Order matters: a status computed for an older generation says nothing about the current spec.
local hs = {}
local kind = obj.kind or "object"
local generation = obj.metadata.generation or 0
local waiting = "Waiting for the operator to observe generation " .. tostring(generation)

if obj.status == nil or obj.status.observedGeneration == nil or obj.status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = waiting
  return hs
end

local conditions = {}
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    -- A condition carried over from an older generation is not an observation of this spec.
    if condition.observedGeneration ~= nil and condition.observedGeneration < generation then
      hs.status = "Progressing"
      hs.message = waiting
      return hs
    end
    conditions[condition.type] = condition
  end
end

local function describe(condition, fallback)
  if condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  if condition.reason ~= nil and condition.reason ~= "" then
    return condition.reason
  end
  return fallback
end

local degraded = conditions["Degraded"]
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(degraded, kind .. " is degraded")
  return hs
end

local ready = conditions["Ready"]
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, kind .. " is ready")
  return hs
end

local progressing = conditions["Progressing"]
if progressing ~= nil and progressing.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(progressing, kind .. " is progressing")
  return hs
end

hs.status = "Progressing"
if ready ~= nil then
  hs.message = describe(ready, "Waiting for " .. kind .. " to become Ready")
else
  hs.message = "Waiting for " .. kind .. " to become Ready"
end
return hs
