-- Argo CD health of a kubenas.io/NASExperiment (resource.customizations.health.kubenas.io_NASExperiment).
-- Reads the operator's conditions: Failed/Stalled -> Degraded, Succeeded -> Healthy, anything
-- else (not yet observed, Reconciling while trials run) -> Progressing.
local hs = {}
local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local generation = obj.metadata ~= nil and obj.metadata.generation or nil
local observed = obj.status ~= nil and obj.status.observedGeneration or nil
if observed == nil or (generation ~= nil and observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the kubenas operator to observe this experiment"
  return hs
end

local failed = condition("Failed")
local stalled = condition("Stalled")
local succeeded = condition("Succeeded")
if failed ~= nil and failed.status == "True" then
  hs.status = "Degraded"
  hs.message = (failed.reason or "Failed") .. ": " .. (failed.message or "")
elseif stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = (stalled.reason or "Stalled") .. ": " .. (stalled.message or "")
elseif succeeded ~= nil and succeeded.status == "True" then
  hs.status = "Healthy"
  hs.message = succeeded.message or "The search has finished"
else
  local reconciling = condition("Reconciling")
  hs.status = "Progressing"
  if reconciling ~= nil and reconciling.message ~= nil then
    hs.message = reconciling.message
  else
    hs.message = "The search is running"
  end
end
return hs
