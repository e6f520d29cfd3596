// The map drawn with cytoscape.js: groups as nodes, the edges the policy
// allows in grey (dashed when only some members get them), and observed
// flows on top: allowed in green, denied in red, audit would-deny in orange.
// Layout is cytoscape's own (breadthfirst from the world, or cose).

import cytoscape from "cytoscape";
import type { Core, ElementDefinition } from "cytoscape";
import type { TenantMap, Verdict } from "./api";

export const WORLD = "world";

/** The id of the observed-flows edge of a verdict between two groups. */
export function observedId(verdict: Verdict, from: string, to: string): string {
  return `flow:${verdict}:${from}->${to}`;
}

/** The id of the policy edge between two groups. */
export function policyId(from: string, to: string): string {
  return `policy:${from}->${to}`;
}

const style: cytoscape.StylesheetJson = [
  {
    selector: "node",
    style: {
      label: "data(label)",
      "text-wrap": "wrap",
      "text-valign": "bottom",
      "text-margin-y": 6,
      "font-size": 13,
      color: "#1d2330",
      "background-color": "#3b6fd8",
      width: 42,
      height: 42,
      "border-width": 2,
      "border-color": "#ffffff",
    },
  },
  {
    selector: "node.world",
    style: { shape: "round-rectangle", "background-color": "#6b7280", width: 54 },
  },
  {
    selector: "edge",
    style: {
      "curve-style": "bezier",
      "target-arrow-shape": "triangle",
      "arrow-scale": 1.2,
      width: 2,
      label: "data(label)",
      "font-size": 11,
      "text-rotation": "autorotate",
      "text-background-color": "#ffffff",
      "text-background-opacity": 0.85,
      "text-background-padding": "2px",
    },
  },
  {
    selector: "edge.policy",
    style: { "line-color": "#9aa3b5", "target-arrow-color": "#9aa3b5", color: "#4b5563" },
  },
  { selector: "edge.policy.some", style: { "line-style": "dashed" } },
  {
    selector: "edge.allow",
    style: { "line-color": "#2e9d4f", "target-arrow-color": "#2e9d4f", color: "#1f6e37", width: 4 },
  },
  {
    selector: "edge.deny",
    style: { "line-color": "#d33c3c", "target-arrow-color": "#d33c3c", color: "#a12020", width: 4 },
  },
  {
    selector: "edge.audit",
    style: { "line-color": "#e08a00", "target-arrow-color": "#e08a00", color: "#9a5d00", width: 4 },
  },
  {
    selector: ":selected",
    style: { "overlay-color": "#3b6fd8", "overlay-opacity": 0.25, "overlay-padding": 6 },
  },
];

/** Creates the graph in `container`. */
export function createGraph(container: HTMLElement): Core {
  return cytoscape({
    container,
    style,
    elements: [],
    wheelSensitivity: 0.3,
    minZoom: 0.3,
    maxZoom: 3,
    boxSelectionEnabled: false,
    selectionType: "single",
  });
}

/** Replaces the graph's groups and policy edges with those of `map`. */
export function showMap(cy: Core, map: TenantMap): void {
  const elements: ElementDefinition[] = [];
  for (const group of map.groups) {
    const count = group.members.length;
    elements.push({
      group: "nodes",
      data: {
        id: group.id,
        label: group.kind === "world" ? group.label : `${group.label}\n${count} endpoint${count === 1 ? "" : "s"}`,
      },
      classes: group.kind === "world" ? "world" : "",
    });
  }
  for (const edge of map.edges) {
    const some = edge.ports.some((p) => p.coverage === "some");
    elements.push({
      group: "edges",
      data: {
        id: policyId(edge.from, edge.to),
        source: edge.from,
        target: edge.to,
        label: edge.ports.map((p) => p.text).join(", "),
      },
      classes: some ? "policy some" : "policy",
    });
  }
  cy.elements().remove();
  cy.add(elements);
  layout(cy);
}

/**
 * Lays the graph out with cytoscape's own layouts: a circle (the world
 * first) while the groups are few, so that no edge runs through a group it
 * does not join; force-directed (cose) beyond.
 */
export function layout(cy: Core): void {
  const options: cytoscape.LayoutOptions =
    cy.nodes().length <= 12
      ? {
          name: "circle",
          padding: 50,
          animate: false,
          startAngle: (3 / 2) * Math.PI,
          sort: (a, b) => (a.id() === WORLD ? -1 : b.id() === WORLD ? 1 : a.id().localeCompare(b.id())),
        }
      : { name: "cose", animate: false, padding: 40 };
  cy.layout(options).run();
  cy.fit(undefined, 50);
}

/**
 * Adds to (or creates) the observed-flows edge of a verdict between two
 * groups; creates the world node when a flow comes from or goes outside.
 */
export function countFlow(cy: Core, verdict: Verdict, from: string, to: string, count: number): void {
  for (const id of [from, to]) {
    if (cy.$id(id).empty()) {
      if (id !== WORLD) {
        return;
      }
      cy.add({ group: "nodes", data: { id: WORLD, label: WORLD }, classes: "world" });
      layout(cy);
    }
  }
  const id = observedId(verdict, from, to);
  const words = { allow: "allowed", deny: "denied", audit: "would deny" }[verdict];
  const label = `${count} ${words}`;
  const edge = cy.$id(id);
  if (edge.nonempty()) {
    edge.data("label", label);
    return;
  }
  cy.add({
    group: "edges",
    data: { id, source: from, target: to, label, verdict },
    classes: `observed ${verdict}`,
  });
}
