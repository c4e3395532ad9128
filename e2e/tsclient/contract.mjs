// Drives an Octopus server (the twin, in the test suite) with Octopus's official
// TypeScript client, @octopusdeploy/api-client, as a user script would: what the client
// has repositories for (spaces, space resolution, tasks, task waiting, cancel) through
// them, the rest (nodes, maintenance, server status, creating a task) through the
// client's own request methods on the documented routes.
//
// Every call prints `ok <call>: <result>`; the first failure prints `FAIL <call>: ...`
// and exits 1. Inputs (environment): OCTOPUS_URL, OCTOPUS_API_KEY, OCTOPUS_VERSION (what
// the root document must say), OCTOPUS_NODES (comma-separated node names).
import {
  Client,
  resolveSpaceId,
  ServerTaskRepository,
  ServerTaskWaiter,
  SpaceRepository,
  SpaceServerTaskRepository,
  TaskState,
} from "@octopusdeploy/api-client";

const env = (name) => {
  const value = process.env[name];
  if (!value) fail("setup", `${name} is not set`);
  return value;
};
const url = env("OCTOPUS_URL");
const apiKey = env("OCTOPUS_API_KEY");
const version = env("OCTOPUS_VERSION");
const nodeNames = env("OCTOPUS_NODES").split(",");
const spaceName = "Default";

function fail(call, message) {
  console.error(`FAIL ${call}: ${message}`);
  process.exit(1);
}

function check(condition, what) {
  if (!condition) throw new Error(`expected ${what}`);
}

function eq(actual, expected, what) {
  const [a, e] = [JSON.stringify(actual), JSON.stringify(expected)];
  if (a !== e) throw new Error(`${what}: expected ${e}, got ${a}`);
}

// The required (non-optional) fields of the client's models, from its typings
// (dist/**/*.d.ts), with their JSON types: what a TypeScript user script relies on.
// `string|null`: typed `string` there, but a nullable string in Octopus's own C# model
// (OctopusClients), which the server may send as null.
const models = {
  ResourceCollection: { Items: "array", ItemsPerPage: "number", ItemType: "string", LastPageNumber: "number", Links: "object", NumberOfPages: "number", TotalResults: "number" },
  ResourceCollectionLinks: { Self: "string", Template: "string", "Page.All": "string", "Page.Current": "string", "Page.Last": "string" },
  Space: { Id: "string", Name: "string", Slug: "string", IsDefault: "boolean", SpaceManagersTeamMembers: "array", SpaceManagersTeams: "array", TaskQueueStopped: "boolean" },
  ServerTask: { Id: "string", Name: "string", Description: "string", State: "string", IsCompleted: "boolean", HasPendingInterruptions: "boolean", HasWarningsOrErrors: "boolean", Arguments: "object" },
  ServerTaskDetails: { Task: "object", Progress: "object", PhysicalLogSize: "number", ActivityLogs: "array" },
  TaskProgress: { ProgressPercentage: "number", EstimatedTimeRemaining: "string" },
  ActivityElement: { Id: "string", Name: "string", Started: "string", Children: "array", ShowAtSummaryLevel: "boolean", LogElements: "array", ProgressPercentage: "number", ProgressMessage: "string|null" },
  ActivityLogElement: { Category: "string", OccurredAt: "string", MessageText: "string" },
};

/** Checks `value` has every required field of the client's model `name`; returns it. */
function shaped(value, name) {
  for (const [field, type] of Object.entries(models[name])) {
    const actual = Array.isArray(value?.[field]) ? "array" : value?.[field] === null ? "null" : typeof value?.[field];
    if (!type.split("|").includes(actual)) throw new Error(`${name}.${field}: expected ${type}, got ${actual}`);
  }
  return value;
}

/** A collection page of model `item`, checked item by item. */
function page(value, item) {
  shaped(value, "ResourceCollection");
  shaped(value.Links, "ResourceCollectionLinks");
  value.Items.forEach((i) => shaped(i, item));
  return value;
}

/** Runs one call; prints its result, or fails the script naming the call. */
async function call(name, fn) {
  try {
    const result = await fn();
    console.log(`ok ${name}: ${result}`);
  } catch (e) {
    const status = e?.StatusCode ? ` [HTTP ${e.StatusCode}]` : "";
    fail(name, `${e?.message ?? e}${status}`);
  }
}

/** Runs a call that must be refused; returns the client's error. */
async function refused(name, fn, statusCode) {
  try {
    await fn();
  } catch (e) {
    if (statusCode !== undefined && e?.StatusCode !== statusCode) {
      fail(name, `expected HTTP ${statusCode}, got ${e?.StatusCode}: ${e?.message}`);
    }
    console.log(`ok ${name}: refused${e?.StatusCode ? ` HTTP ${e.StatusCode}` : ""}: ${e?.message}`);
    return e;
  }
  fail(name, "expected a refusal, the call succeeded");
}

// A logger that keeps the client's debug chatter out and its errors visible.
const logging = {
  debug: () => {},
  info: () => {},
  warn: (m) => console.log(`  client warn: ${m}`),
  error: (m) => console.log(`  client error: ${m}`),
};
const configuration = (key) => ({ userAgentApp: "octopus-operator-contract", instanceURL: url, apiKey: key, logging });

// --- A wrong API key: the root document is anonymous (Client.create reads it), the
// first authenticated call is refused with 401.
let stranger;
await call("Client.create (wrong API key)", async () => {
  stranger = await Client.create(configuration("API-WRONGKEY0000000000000000"));
  return `connected, root is anonymous`;
});
await refused("SpaceRepository.list (wrong API key)", () => new SpaceRepository(stranger).list(), 401);

// --- The right key.
let client;
await call("Client.create", async () => {
  client = await Client.create(configuration(apiKey));
  const info = await client.getServerInformation();
  eq(info.version, version, "Version");
  check(/^[0-9a-f-]{36}$/.test(info.installationId), `an installation id, got ${info.installationId}`);
  return `version ${info.version}, installation ${info.installationId}`;
});

await call("client.get ~/api (root document)", async () => {
  const root = await client.get("~/api");
  eq(root.Application, "Octopus Deploy", "Application");
  eq(root.Version, version, "Version");
  check(root.ApiVersion, "ApiVersion");
  for (const link of ["Spaces", "Tasks", "OctopusServerNodes", "MaintenanceConfiguration", "ServerStatus"]) {
    check(root.Links?.[link], `link ${link}`);
  }
  return `${root.Application} ${root.Version}, API ${root.ApiVersion}, ${Object.keys(root.Links).length} links`;
});

// --- Spaces.
const spaces = new SpaceRepository(client);
let defaultSpace;
await call("SpaceRepository.list", async () => {
  const list = page(await spaces.list({ take: 30 }), "Space");
  defaultSpace = list.Items.find((s) => s.IsDefault);
  check(defaultSpace, "a default space");
  eq(list.TotalResults, list.Items.length, "TotalResults");
  return `${list.TotalResults} space(s): ${list.Items.map((s) => `${s.Id} ${s.Name}${s.IsDefault ? " (default)" : ""}`).join(", ")}`;
});
await call("SpaceRepository.get", async () => {
  const space = shaped(await spaces.get(defaultSpace.Id), "Space");
  eq([space.Id, space.Name, space.Slug], [defaultSpace.Id, spaceName, "default"], "space");
  return `${space.Id} ${space.Name} slug ${space.Slug}`;
});
await call(`resolveSpaceId "${spaceName}"`, async () => {
  const id = await resolveSpaceId(client, spaceName);
  eq(id, defaultSpace.Id, "space id");
  return id;
});
await refused(`resolveSpaceId "No Such Space"`, () => resolveSpaceId(client, "No Such Space"));

// --- Nodes: the client has no repository for them; its request methods on the routes.
let nodes;
await call("client.get ~/api/octopusservernodes{?skip,take} take=1", async () => {
  const first = shaped(await client.get("~/api/octopusservernodes{?skip,take}", { take: 1 }), "ResourceCollection");
  eq([first.TotalResults, first.Items.length], [nodeNames.length, 1], "TotalResults, items on the page");
  shaped(first.Links, "ResourceCollectionLinks");
  const all = await client.get(first.Links["Page.All"]);
  nodes = all.Items;
  eq(nodes.map((n) => n.Name), nodeNames, "node names");
  return `${first.TotalResults} nodes, first page ${first.Items[0].Name}; Page.All: ${nodes.map((n) => n.Name).join(", ")}`;
});
await call("client.get ~/api/octopusservernodes/{id}", async () => {
  const node = await client.get("~/api/octopusservernodes/{id}", { id: nodes[1].Id });
  eq([node.Name, node.IsInMaintenanceMode], [nodeNames[1], false], "Name, IsInMaintenanceMode");
  check(node.MaxConcurrentTasks > 0, "MaxConcurrentTasks > 0");
  return `${node.Id} ${node.Name}, MaxConcurrentTasks ${node.MaxConcurrentTasks}`;
});
for (const drained of [true, false]) {
  await call(`client.doUpdate ~/api/octopusservernodes/{id} (IsInMaintenanceMode=${drained})`, async () => {
    const node = await client.get("~/api/octopusservernodes/{id}", { id: nodes[1].Id });
    const saved = await client.doUpdate("~/api/octopusservernodes/{id}", { ...node, IsInMaintenanceMode: drained }, { id: node.Id });
    eq(saved.IsInMaintenanceMode, drained, "IsInMaintenanceMode");
    return `${saved.Name} IsInMaintenanceMode=${saved.IsInMaintenanceMode}`;
  });
}
await call("client.get ~/api/octopusservernodes/summary", async () => {
  const summary = await client.get("~/api/octopusservernodes/summary");
  eq(summary.Nodes.map((n) => n.Name), nodeNames, "summary node names");
  check(summary.Nodes.every((n) => n.IsOffline === false && typeof n.RunningTaskCount === "number"), "online nodes with RunningTaskCount");
  return summary.Nodes.map((n) => `${n.Name} offline=${n.IsOffline} running=${n.RunningTaskCount}`).join(", ");
});
await call("client.get ~/api/octopusservernodes/ping", async () => {
  const ping = await client.get("~/api/octopusservernodes/ping");
  check(ping, "a body");
  return JSON.stringify(ping);
});

// --- Maintenance mode and server status.
for (const on of [true, false]) {
  await call(`client.doUpdate ~/api/maintenanceconfiguration (IsInMaintenanceMode=${on})`, async () => {
    const config = await client.get("~/api/maintenanceconfiguration");
    const saved = await client.doUpdate("~/api/maintenanceconfiguration", { ...config, IsInMaintenanceMode: on });
    eq(saved.IsInMaintenanceMode, on, "IsInMaintenanceMode");
    const status = await client.get("~/api/serverstatus");
    eq(status.IsInMaintenanceMode, on, "serverstatus IsInMaintenanceMode");
    return `${saved.Id} IsInMaintenanceMode=${saved.IsInMaintenanceMode}; serverstatus agrees`;
  });
}
await call("client.get ~/api/serverstatus", async () => {
  const status = await client.get("~/api/serverstatus");
  eq(status.MaximumAvailableVersion, version, "MaximumAvailableVersion");
  return `database encrypted ${status.IsDatabaseEncrypted}, upgrade available ${status.IsUpgradeAvailable}, max ${status.MaximumAvailableVersion}`;
});

// --- Tasks. Creating one: the client has no repository for it; POST the space's tasks.
let task;
await call("client.doCreate ~/api/{spaceId}/tasks (Health)", async () => {
  task = await client.doCreate(
    "~/api/{spaceId}/tasks",
    { Name: "Health", Description: "TypeScript client check", Arguments: { EnvironmentId: "Environments-1" } },
    { spaceId: defaultSpace.Id },
  );
  shaped(task, "ServerTask");
  eq([task.Name, task.SpaceId, task.Arguments?.EnvironmentId], ["Health", defaultSpace.Id, "Environments-1"], "Name, SpaceId, EnvironmentId");
  check([TaskState.Queued, TaskState.Executing].includes(task.State), `a queued or executing task, got ${task.State}`);
  eq(task.IsCompleted, false, "IsCompleted");
  return `${task.Id} ${task.Name} ${task.State} on ${task.ServerNode ?? "(no node yet)"}`;
});
const spaceTasks = new SpaceServerTaskRepository(client, spaceName);
await call("SpaceServerTaskRepository.getById", async () => {
  const t = shaped(await spaceTasks.getById(task.Id), "ServerTask");
  eq(t.Id, task.Id, "Id");
  task = t;
  check(t.ServerNode, "a ServerNode once picked up");
  return `${t.Id} ${t.State} on ${t.ServerNode}`;
});
await call("SpaceServerTaskRepository.getByIds", async () => {
  const list = (await spaceTasks.getByIds([task.Id])).map((t) => shaped(t, "ServerTask"));
  eq(list.map((t) => t.Id), [task.Id], "ids");
  return `${list.length} task(s)`;
});
await call("client.request ~/api/{spaceId}/tasks{?states,node,name,take} (Executing on the task's node)", async () => {
  const found = await client.request("~/api/{spaceId}/tasks{?states,node,name,take}", {
    spaceName,
    states: [TaskState.Executing, TaskState.Cancelling].join(","),
    node: task.ServerNode,
    name: "Health",
    take: 10,
  });
  page(found, "ServerTask");
  check(found.Items.some((t) => t.Id === task.Id), `${task.Id} in the list`);
  check(found.Items.every((t) => t.ServerNode === task.ServerNode && t.State === TaskState.Executing), "only executing tasks on that node");
  return `${found.Items.length} task(s): ${found.Items.map((t) => t.Id).join(", ")}`;
});
await call("client.request ~/api/{spaceId}/tasks{?states} (Success)", async () => {
  const done = page(await client.request("~/api/{spaceId}/tasks{?states}", { spaceName, states: TaskState.Success }), "ServerTask");
  check(done.Items.every((t) => t.State === TaskState.Success), "only successful tasks");
  check(!done.Items.some((t) => t.Id === task.Id), `${task.Id} not listed`);
  return `${done.Items.length} task(s)`;
});
const otherNode = nodeNames.find((n) => n !== task.ServerNode);
await call(`client.request ~/api/tasks{?node} (${otherNode})`, async () => {
  const there = page(await client.request("~/api/tasks{?node}", { node: otherNode }), "ServerTask");
  check(!there.Items.some((t) => t.Id === task.Id), `${task.Id} not on ${otherNode}`);
  return `${there.Items.length} task(s) on ${otherNode}`;
});
await call("SpaceServerTaskRepository.getDetails", async () => {
  const details = shaped(await spaceTasks.getDetails(task.Id), "ServerTaskDetails");
  shaped(details.Task, "ServerTask");
  shaped(details.Progress, "TaskProgress");
  const walk = (a) => { shaped(a, "ActivityElement"); a.LogElements.forEach((l) => shaped(l, "ActivityLogElement")); a.Children.forEach(walk); };
  details.ActivityLogs.forEach(walk);
  eq(details.Task.Id, task.Id, "Task.Id");
  check(details.ActivityLogs.length > 0, "activity logs");
  check(typeof details.Progress.ProgressPercentage === "number", "Progress.ProgressPercentage");
  const lines = details.ActivityLogs.flatMap((a) => a.LogElements).length;
  return `${details.ActivityLogs[0].Status}, ${lines} log line(s), PhysicalLogSize ${details.PhysicalLogSize}`;
});
await call("SpaceServerTaskRepository.getRaw", async () => {
  const raw = await spaceTasks.getRaw(task.Id);
  check(typeof raw === "string" && raw.length > 0, "a raw log");
  return `${raw.split("\n").length} line(s)`;
});
await call("ServerTaskRepository.cancel", async () => {
  await new ServerTaskRepository(client).cancel(task.Id);
  const t = await spaceTasks.getById(task.Id);
  check([TaskState.Cancelling, TaskState.Canceled].includes(t.State), `Cancelling or Canceled, got ${t.State}`);
  return `${t.Id} ${t.State}`;
});
await call("ServerTaskWaiter.waitForServerTaskToComplete", async () => {
  const waiter = new ServerTaskWaiter(client, spaceName, { maxRetries: 1, retryBackoffMs: 100 });
  const t = await waiter.waitForServerTaskToComplete(task.Id, 50, 10_000);
  eq([t.State, t.IsCompleted, t.FinishedSuccessfully], [TaskState.Canceled, true, false], "State, IsCompleted, FinishedSuccessfully");
  check(t.CompletedTime, "CompletedTime");
  return `${t.Id} ${t.State} at ${t.CompletedTime}`;
});
await refused(
  "client.doCreate ~/api/{spaceId}/tasks (UpdateCalamari by EnvironmentId: wrong shape)",
  async () => {
    await client.doCreate(
      "~/api/{spaceId}/tasks",
      { Name: "UpdateCalamari", Description: "wrong shape", Arguments: { EnvironmentId: "Environments-1" } },
      { spaceId: defaultSpace.Id },
    );
  },
  400,
);
await refused("SpaceServerTaskRepository.getById (unknown task)", () => spaceTasks.getById("ServerTasks-999999"), 404);
console.log("contract: every call answered as expected");
