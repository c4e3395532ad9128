-- Argo CD health of an OctopusCluster (octopusoperator.dev), from the conditions the
-- operator writes. Install: the chart README, "Argo CD health check". Runs without Lua's
-- open libraries (Argo CD's default for argocd-cm scripts).
--
-- The order is the one of status.phase: a status older than the spec says nothing yet;
-- then Paused, UpgradeBlocked, Degraded, Progressing, and Ready last.
local hs = {}

local function true_condition(conditions, type)
  for _, c in ipairs(conditions) do
    if c.type == type and c.status == "True" then
      return c
    end
  end
  return nil
end

-- "Reason: message" (or only the one that is set).
local function describe(c)
  if c.message == nil or c.message == "" then
    return c.reason or c.type
  end
  if c.reason == nil or c.reason == "" then
    return c.message
  end
  return c.reason .. ": " .. c.message
end

local status = obj.status
if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local rules = {
  { type = "Paused", health = "Suspended" },
  { type = "UpgradeBlocked", health = "Degraded" },
  { type = "Degraded", health = "Degraded" },
  { type = "Progressing", health = "Progressing" },
  { type = "Ready", health = "Healthy" },
}
for _, rule in ipairs(rules) do
  local c = true_condition(status.conditions, rule.type)
  if c ~= nil then
    hs.status = rule.health
    hs.message = describe(c)
    return hs
  end
end

-- Nothing true: not ready yet (being created, nodes starting), so not Healthy.
hs.status = "Progressing"
hs.message = "Waiting for the cluster to be Ready"
for _, c in ipairs(status.conditions) do
  if c.type == "Ready" then
    hs.message = describe(c)
  end
end
return hs
