-- Argo CD health of a tritonoperator.dev object (TritonServer, TritonModel), read from the status the
-- operator writes. One script for both kinds: they share the condition vocabulary; only a TritonModel
-- has status.rollout (a canary rollout) and status.traffic (its versions' shares).
-- Order matters: a status computed for an older generation says nothing about the current spec, so that
-- comes first; then the rollout, whose phase outranks conditions that only restate it (Ready stays True
-- while the stable version serves, Degraded=True/RolledBack repeats a rollback); then the conditions.
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

-- A canary rollout: Progressing while it runs or holds (an inconclusive step included), Degraded once it
-- rolled back or was aborted, even though the stable version serves and Ready is True. Promoted, and a
-- held experiment (status.traffic with variants, no progressing phase), fall through to the conditions.
local rollout = obj.status.rollout
local phase = nil
if type(rollout) == "table" then
  phase = rollout.phase
end

-- The rollout's own message (it carries the step, the weights and the measured numbers), else one built
-- from its fields.
local function rollout_message(r, summary)
  if r.message ~= nil and r.message ~= "" then
    return r.message
  end
  local built = summary .. " canary version " .. tostring(r.canaryVersion or "?")
  built = built .. " against stable " .. tostring(r.stableVersion or "?")
  if type(r.stepIndex) == "number" then
    built = built .. " at step " .. tostring(r.stepIndex + 1)
    if type(r.steps) == "number" then
      built = built .. "/" .. tostring(r.steps)
    end
  end
  if type(r.canaryWeight) == "number" then
    built = built .. " (canary " .. tostring(r.canaryWeight) .. "%)"
  end
  if r.reason ~= nil and r.reason ~= "" then
    built = built .. ", " .. r.reason
  end
  if r.lastVerdictMessage ~= nil and r.lastVerdictMessage ~= "" then
    built = built .. ": " .. r.lastVerdictMessage
  end
  return built
end

if phase == "RolledBack" then
  hs.status = "Degraded"
  hs.message = rollout_message(rollout, "Rolled back")
  return hs
end
-- A canary withdrawn by putting the spec back to the stable version (a GitOps revert) is what the user
-- asked for: the conditions below judge it like any settled model.
if phase == "Aborted" and rollout.reason ~= "CanaryWithdrawn" then
  hs.status = "Degraded"
  hs.message = rollout_message(rollout, "Aborted")
  return hs
end

local degraded = conditions["Degraded"]
-- Degraded=True with reason RolledBack reports a rollback that status.rollout describes; once the rollout
-- is retried or promoted, the phase (above and below) is the current word, not that condition.
local restates_rollout = phase ~= nil and degraded ~= nil and degraded.reason == "RolledBack"
if degraded ~= nil and degraded.status == "True" and not restates_rollout then
  hs.status = "Degraded"
  hs.message = describe(degraded, kind .. " is degraded")
  return hs
end

if phase == "Progressing" then
  hs.status = "Progressing"
  hs.message = rollout_message(rollout, "Rolling out")
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
