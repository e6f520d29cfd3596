// The page: asks for a token when the server wants one, lets the user pick
// a tenant and a grouping, draws the map, follows the tenant's flows and
// puts them on the map as they arrive, and refreshes the map and the rule
// hits when the intent or the counters change.

import "./style.css";
import type { Core } from "cytoscape";
import { ApiError, api, followFlows, saveToken, savedToken } from "./api";
import type { MapGroup, RuleHitsList, TenantMap } from "./api";
import { edgeDetails, flowItem, groupDetails } from "./details";
import { el } from "./dom";
import { FlowStore } from "./flows";
import { WORLD, countFlow, createGraph, showMap } from "./graph";
import { showAudit, showRules } from "./policies";

/** How often the intent revision and the rule hits are polled. */
const POLL_MS = 5000;
/** How far back the flow stream starts. */
const FLOW_HISTORY = "1h";

function byId<T extends HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (!element) {
    throw new Error(`the page has no #${id}`);
  }
  return element as T;
}

const ui = {
  tenant: byId<HTMLSelectElement>("tenant"),
  groupBy: byId<HTMLSelectElement>("group-by"),
  groupLabel: byId<HTMLInputElement>("group-label"),
  live: byId<HTMLSpanElement>("live"),
  auth: byId<HTMLSpanElement>("auth"),
  tokenButton: byId<HTMLButtonElement>("token-button"),
  tokenDialog: byId<HTMLDialogElement>("token-dialog"),
  tokenForm: byId<HTMLFormElement>("token-form"),
  tokenInput: byId<HTMLInputElement>("token-input"),
  tokenError: byId<HTMLParagraphElement>("token-error"),
  tokenForget: byId<HTMLButtonElement>("token-forget"),
  map: byId<HTMLDivElement>("map"),
  mapError: byId<HTMLParagraphElement>("map-error"),
  details: byId<HTMLElement>("details"),
  denied: byId<HTMLOListElement>("denied-list"),
  rules: byId<HTMLTableElement>("rules").tBodies[0],
  audit: byId<HTMLTableElement>("audit").tBodies[0],
};

const cy: Core = createGraph(ui.map);
// For the browser test and for debugging from the console.
(window as unknown as { palisadeMap: Core }).palisadeMap = cy;

let map: TenantMap | null = null;
let rules: RuleHitsList | null = null;
let intentRevision = -1;
let selected: { kind: "node" | "edge"; id: string } | null = null;
let stream: AbortController | null = null;

/** The group of each endpoint of the current map. */
function groupOf(ref: string): string | undefined {
  return map?.groups.find((g) => g.members.some((m) => m.ref === ref))?.id;
}

const flows = new FlowStore(groupOf);

function groupBy(): string {
  if (ui.groupBy.value === "custom") {
    const key = ui.groupLabel.value.trim();
    return key ? `label:${key}` : "identity";
  }
  return ui.groupBy.value;
}

function setLive(text: string, ok: boolean): void {
  ui.live.textContent = text;
  ui.live.className = ok ? "badge ok" : "badge warn";
}

// ---- token -----------------------------------------------------------------

function askToken(message = ""): void {
  ui.tokenError.textContent = message;
  ui.tokenInput.value = savedToken() ?? "";
  if (!ui.tokenDialog.open) {
    ui.tokenDialog.showModal();
  }
}

ui.tokenButton.addEventListener("click", () => askToken());
ui.tokenForget.addEventListener("click", () => {
  saveToken(null);
  ui.tokenInput.value = "";
});
ui.tokenForm.addEventListener("submit", () => {
  saveToken(ui.tokenInput.value.trim() || null);
  void start();
});

/** Handles an API error: a bad token asks for another one. */
function failed(error: unknown, where: HTMLElement): void {
  if (error instanceof ApiError && error.status === 401) {
    askToken(error.message);
  }
  where.textContent = error instanceof Error ? error.message : String(error);
}

// ---- the map and its panels ------------------------------------------------

function labelOf(id: string): string {
  return map?.groups.find((g) => g.id === id)?.label ?? id;
}

function showDetails(): void {
  if (!selected || !map) {
    return;
  }
  let parts: (HTMLElement | null)[];
  if (selected.kind === "node") {
    const id = selected.id;
    const group: MapGroup =
      map.groups.find((g) => g.id === id) ??
      { id: WORLD, label: WORLD, kind: "world", members: [], policies: [] };
    parts = groupDetails(group, flows.newest((o) => o.from === id || o.to === id, 30));
  } else {
    const edge = cy.$id(selected.id);
    const from: string = edge.data("source");
    const to: string = edge.data("target");
    const policy = map.edges.find((e) => e.from === from && e.to === to);
    parts = edgeDetails(
      labelOf(from),
      labelOf(to),
      policy,
      flows.newest((o) => o.from === from && o.to === to, 30),
    );
  }
  ui.details.replaceChildren(el("h2", {}, "Details"), ...parts.filter((p) => p !== null));
}

cy.on("tap", "node", (event) => {
  selected = { kind: "node", id: event.target.id() };
  showDetails();
});
cy.on("tap", "edge", (event) => {
  selected = { kind: "edge", id: event.target.id() };
  showDetails();
});

function showDenied(): void {
  const denied = flows.newest((o) => o.verdict === "deny", 50);
  ui.denied.replaceChildren(
    ...denied.map((o) => {
      const item = flowItem(o);
      item.addEventListener("click", () => {
        if (o.from === undefined || o.to === undefined) {
          return;
        }
        const id = `flow:deny:${o.from}->${o.to}`;
        cy.elements().unselect();
        cy.$id(id).select();
        selected = { kind: "edge", id };
        showDetails();
      });
      return item;
    }),
  );
}

function showPolicyPanels(): void {
  if (rules) {
    showRules(ui.rules, rules.rules);
    showAudit(ui.audit, rules.rules, flows.newest((o) => o.verdict === "audit", 500));
  }
}

/** Draws the observed flows on the current map. */
function drawFlows(): void {
  for (const edge of flows.edges()) {
    countFlow(cy, edge.verdict, edge.from, edge.to, edge.count);
  }
}

async function loadMap(): Promise<void> {
  const tenant = ui.tenant.value;
  if (!tenant) {
    return;
  }
  try {
    map = await api.map(tenant, groupBy());
    ui.mapError.textContent = "";
    showMap(cy, map);
    flows.regroup(groupOf);
    drawFlows();
    showDetails();
  } catch (error) {
    failed(error, ui.mapError);
  }
}

async function loadRules(): Promise<void> {
  const tenant = ui.tenant.value;
  if (!tenant) {
    return;
  }
  try {
    rules = await api.rules(tenant);
    showPolicyPanels();
  } catch (error) {
    failed(error, ui.mapError);
  }
}

// ---- the flow stream -------------------------------------------------------

function follow(tenant: string): void {
  stream?.abort();
  const controller = new AbortController();
  stream = controller;
  flows.clear();
  ui.denied.replaceChildren();
  const run = async (): Promise<void> => {
    while (!controller.signal.aborted) {
      try {
        setLive("live", true);
        await followFlows(
          tenant,
          FLOW_HISTORY,
          (record) => {
            const { observed, count } = flows.add(record);
            if (observed.from !== undefined && observed.to !== undefined) {
              countFlow(cy, observed.verdict, observed.from, observed.to, count);
            }
            if (observed.verdict === "deny") {
              showDenied();
            }
            if (observed.verdict === "audit") {
              showPolicyPanels();
            }
            if (selected) {
              showDetails();
            }
          },
          controller.signal,
        );
      } catch (error) {
        if (controller.signal.aborted) {
          return;
        }
        if (error instanceof ApiError && error.status === 401) {
          failed(error, ui.mapError);
          return;
        }
      }
      setLive("reconnecting", false);
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  };
  void run();
}

// ---- start and refresh -----------------------------------------------------

async function selectTenant(): Promise<void> {
  selected = null;
  ui.details.replaceChildren(
    el("h2", {}, "Details"),
    el("p", { class: "hint" }, "Click a group or an edge of the map."),
  );
  location.hash = new URLSearchParams({ tenant: ui.tenant.value, groupBy: groupBy() }).toString();
  await loadMap();
  await loadRules();
  follow(ui.tenant.value);
}

async function start(): Promise<void> {
  try {
    const status = await api.status();
    intentRevision = status.intentRevision;
    ui.auth.textContent =
      status.auth === "disabled" ? "auth disabled" : `${status.subject} (${status.role})`;
    const tenants = await api.tenants();
    const wanted = new URLSearchParams(location.hash.slice(1));
    ui.tenant.replaceChildren(...tenants.map((t) => el("option", { value: t }, t)));
    const tenant = wanted.get("tenant");
    if (tenant && tenants.includes(tenant)) {
      ui.tenant.value = tenant;
    }
    const by = wanted.get("groupBy");
    if (by === "identity" || by === "label:app") {
      ui.groupBy.value = by;
    } else if (by?.startsWith("label:")) {
      ui.groupBy.value = "custom";
      ui.groupLabel.hidden = false;
      ui.groupLabel.value = by.slice("label:".length);
    }
    if (tenants.length === 0) {
      ui.mapError.textContent = "No tenant yet: apply some resources (palisade apply -f ...).";
      return;
    }
    await selectTenant();
  } catch (error) {
    setLive("offline", false);
    failed(error, ui.mapError);
  }
}

ui.tenant.addEventListener("change", () => void selectTenant());
ui.groupBy.addEventListener("change", () => {
  ui.groupLabel.hidden = ui.groupBy.value !== "custom";
  if (ui.groupBy.value !== "custom" || ui.groupLabel.value.trim()) {
    void selectTenant();
  }
});
ui.groupLabel.addEventListener("change", () => void selectTenant());

/** Reloads the map when the intent changed, and the rule hits always. */
async function poll(): Promise<void> {
  if (!map) {
    return;
  }
  try {
    const status = await api.status();
    if (status.intentRevision !== intentRevision) {
      intentRevision = status.intentRevision;
      await loadMap();
    }
    await loadRules();
  } catch {
    setLive("offline", false);
  }
}

setInterval(() => void poll(), POLL_MS);
void start();
