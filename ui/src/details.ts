// The details panel: what a clicked group or edge is, the policies and
// rules behind it, its recent flows, and "explain" for any flow (the
// server's explain API names the rule that decides it now).

import { ApiError, api, endName, service } from "./api";
import type { MapEdge, MapGroup } from "./api";
import { clock, el } from "./dom";
import type { Observed } from "./flows";

const VERDICT_WORDS = { allow: "ALLOW", deny: "DENY", audit: "AUDIT" } as const;

/** What decided a record, in words. */
export function decidedBy(o: Observed): string {
  const r = o.record;
  if (o.verdict === "audit") {
    return `would deny by ${r.palisade.audit?.rule ?? "an audit rule"}`;
  }
  return r.rule?.name ?? r.event.reason ?? "";
}

/** One flow as a list item, with its explain button. */
export function flowItem(o: Observed): HTMLLIElement {
  const r = o.record;
  const explanation = el("pre", { class: "explain", hidden: "" });
  const button = el("button", { type: "button", class: "explain-button" }, "explain");
  button.addEventListener("click", async (event) => {
    event.stopPropagation();
    explanation.hidden = false;
    explanation.textContent = "asking the server…";
    const proto = r.network.transport;
    const ports = ["tcp", "udp", "sctp"].includes(proto) && r.destination.port !== undefined;
    try {
      const answer = await api.explain({
        from: endName(r, "source"),
        to: endName(r, "destination"),
        proto,
        port: ports ? r.destination.port : undefined,
      });
      explanation.textContent = answer.text;
    } catch (error) {
      explanation.textContent =
        error instanceof ApiError ? `cannot explain: ${error.message}` : String(error);
    }
  });
  const suppressed = r.palisade.suppressed ? ` (+${r.palisade.suppressed} suppressed)` : "";
  return el(
    "li",
    { class: `flow ${o.verdict}`, "data-verdict": o.verdict },
    el("span", { class: "time" }, clock(r["@timestamp"])),
    " ",
    el("span", { class: `verdict ${o.verdict}` }, VERDICT_WORDS[o.verdict]),
    ` ${endName(r, "source")} → ${endName(r, "destination")} ${service(r)} `,
    el("span", { class: "rule" }, decidedBy(o)),
    suppressed,
    " ",
    button,
    explanation,
  );
}

function flowList(flows: Observed[]): HTMLElement {
  if (flows.length === 0) {
    return el("p", { class: "hint" }, "No flows seen yet.");
  }
  return el("ol", { class: "flow-list" }, ...flows.map(flowItem));
}

/** The panel for a group. */
export function groupDetails(group: MapGroup, flows: Observed[]): HTMLElement[] {
  const members =
    group.kind === "world"
      ? el("p", {}, "Addresses outside the tenant's endpoints.")
      : el(
          "table",
          { class: "members" },
          el("thead", {}, el("tr", {}, el("th", {}, "endpoint"), el("th", {}, "addresses"), el("th", {}, "node"), el("th", {}, "identity"))),
          el(
            "tbody",
            {},
            ...group.members.map((m) =>
              el(
                "tr",
                {},
                el("td", {}, m.ref),
                el("td", {}, m.ips.join(", ")),
                el("td", {}, m.node),
                el("td", {}, m.identity === null ? "" : String(m.identity)),
              ),
            ),
          ),
        );
  return [
    el("h3", {}, group.label),
    members,
    el("h4", {}, group.kind === "world" ? "Policies naming the outside" : "Policies selecting it"),
    group.policies.length
      ? el("ul", {}, ...group.policies.map((p) => el("li", {}, p)))
      : el("p", { class: "hint" }, "None: the tenant's default decides."),
    el("h4", {}, "Recent flows"),
    flowList(flows),
  ];
}

/** The panel for the pair of groups an edge joins. */
export function edgeDetails(
  fromLabel: string,
  toLabel: string,
  policy: MapEdge | undefined,
  flows: Observed[],
): (HTMLElement | null)[] {
  const denied = flows.filter((o) => o.verdict === "deny");
  const deniedBy = [...new Set(denied.map(decidedBy).filter(Boolean))];
  return [
    el("h3", {}, `${fromLabel} → ${toLabel}`),
    deniedBy.length
      ? el(
          "div",
          { class: "denied-by" },
          el("h4", {}, "Denied by"),
          el("ul", {}, ...deniedBy.map((rule) => el("li", { class: "rule" }, rule))),
        )
      : null,
    el("h4", {}, "The policy allows"),
    policy
      ? el(
          "table",
          { class: "services" },
          el("thead", {}, el("tr", {}, el("th", {}, "service"), el("th", {}, "for"), el("th", {}, "allowed by"), el("th", {}, "audit"))),
          el(
            "tbody",
            {},
            ...policy.ports.map((p) =>
              el(
                "tr",
                {},
                el("td", {}, p.text),
                el("td", {}, p.coverage === "all" ? "every member" : "some members"),
                el("td", {}, p.allowedBy.join("; ")),
                el("td", {}, p.auditWouldDeny.length ? `would deny: ${p.auditWouldDeny.join("; ")}` : ""),
              ),
            ),
          ),
        )
      : el("p", { class: "hint" }, "Nothing: every flow between these groups is denied."),
    el("h4", {}, "Recent flows"),
    flowList(flows),
  ];
}
