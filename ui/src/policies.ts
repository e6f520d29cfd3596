// The policy list with per-rule hit counts (rules that never matched show
// 0 and are marked), and the audit-mode results: what audit policies would
// have denied, from the audit-would-deny flows.

import type { RuleHits } from "./api";
import { endName, service } from "./api";
import { clock, el } from "./dom";
import type { Observed } from "./flows";

function action(rule: RuleHits): string {
  return rule.attribution.action ?? "deny";
}

/** Fills the rules table. */
export function showRules(body: HTMLTableSectionElement, rules: RuleHits[]): void {
  body.replaceChildren(
    ...rules.map((rule) => {
      // Audit rules never decide packets: their would-deny count says they match.
      const never = rule.packets === 0 && rule.wouldDeny === 0;
      const classes = [never ? "never" : "", rule.inIntent ? "" : "gone", rule.mode].filter(Boolean);
      return el(
        "tr",
        { class: classes.join(" "), "data-rule": rule.text },
        el(
          "td",
          {},
          rule.text,
          never ? el("span", { class: "badge never" }, "never matched") : null,
          rule.wouldDeny > 0 ? el("span", { class: "badge audit" }, `would deny ${rule.wouldDeny}`) : null,
          rule.inIntent ? null : el("span", { class: "badge gone" }, "no longer in the policy"),
        ),
        el("td", {}, rule.mode),
        el("td", {}, action(rule)),
        el("td", { class: "number" }, rule.packets.toLocaleString()),
        el("td", { class: "number" }, rule.bytes.toLocaleString()),
        el("td", {}, rule.nodes.join(", ")),
      );
    }),
  );
}

/** Fills the audit table: one row per audit rule that would have denied. */
export function showAudit(body: HTMLTableSectionElement, rules: RuleHits[], audits: Observed[]): void {
  const byRule = new Map<string, { count: number; last?: Observed }>();
  for (const rule of rules.filter((r) => r.mode === "audit")) {
    byRule.set(rule.text, { count: rule.wouldDeny });
  }
  // audits are newest first: the first one seen per rule is its last flow.
  for (const o of audits) {
    const name = o.record.palisade.audit?.rule ?? "(unnamed audit rule)";
    const entry = [...byRule.entries()].find(([text]) => name.startsWith(text));
    const key = entry ? entry[0] : name;
    const row = byRule.get(key) ?? { count: 0 };
    if (!entry) {
      row.count += 1 + (o.record.palisade.suppressed ?? 0);
    }
    row.last ??= o;
    byRule.set(key, row);
  }
  if (byRule.size === 0) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "3", class: "hint" }, "No policy of this tenant is in audit mode.")));
    return;
  }
  body.replaceChildren(
    ...[...byRule.entries()].map(([rule, { count, last }]) =>
      el(
        "tr",
        { "data-rule": rule },
        el("td", {}, rule),
        el("td", { class: "number" }, count.toLocaleString()),
        el(
          "td",
          {},
          last
            ? `${clock(last.record["@timestamp"])} ${endName(last.record, "source")} → ${endName(last.record, "destination")} ${service(last.record)}`
            : "none yet",
        ),
      ),
    ),
  );
}
