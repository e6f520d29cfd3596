// The server's API as the UI uses it: the token from localStorage on every
// request, errors turned into messages, and the NDJSON flow stream read as
// it arrives. The shapes mirror palisade_client::visibility (Rust).

const TOKEN_KEY = "palisade.token";

export function savedToken(): string | null {
  return localStorage.getItem(TOKEN_KEY);
}

export function saveToken(token: string | null): void {
  if (token) {
    localStorage.setItem(TOKEN_KEY, token);
  } else {
    localStorage.removeItem(TOKEN_KEY);
  }
}

/** An error answer of the API: its status, code and message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const token = savedToken();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function check(response: Response): Promise<Response> {
  if (response.ok) {
    return response;
  }
  let code = "http";
  let message = `HTTP ${response.status}`;
  try {
    const body = await response.json();
    code = body.error.code;
    message = body.error.message;
  } catch {
    // Not the API's error body: keep the status line.
  }
  throw new ApiError(response.status, code, message);
}

async function getJson<T>(path: string): Promise<T> {
  const response = await fetch(`/api/v1${path}`, { headers: headers() });
  return (await check(response)).json();
}

async function postJson<T>(path: string, body: unknown): Promise<T> {
  const response = await fetch(`/api/v1${path}`, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify(body),
  });
  return (await check(response)).json();
}

export interface ServerStatus {
  revision: number;
  intentRevision: number;
  auth: "enabled" | "disabled";
  subject: string;
  role: string;
}

export interface MapMember {
  ref: string;
  name: string;
  labels: Record<string, string>;
  ips: string[];
  node: string;
  identity: number | null;
}

export interface MapGroup {
  id: string;
  label: string;
  kind: "endpoints" | "world";
  members: MapMember[];
  policies: string[];
}

export interface MapPorts {
  protocol: string;
  first: number;
  last: number;
  text: string;
  coverage: "all" | "some";
  allowedBy: string[];
  auditWouldDeny: string[];
}

export interface MapEdge {
  id: string;
  from: string;
  to: string;
  ports: MapPorts[];
}

export interface TenantMap {
  tenant: string;
  revision: number;
  groupBy: string;
  groups: MapGroup[];
  edges: MapEdge[];
}

export interface Attribution {
  kind: string;
  tier?: string;
  tenant?: string;
  policy?: string;
  direction?: string;
  index?: number;
  action?: string;
}

export interface RuleHits {
  attribution: Attribution;
  text: string;
  mode: "enforce" | "audit";
  packets: number;
  bytes: number;
  nodes: string[];
  wouldDeny: number;
  inIntent: boolean;
}

export interface RuleHitsList {
  tenant: string;
  revision: number;
  rules: RuleHits[];
}

export type FlowAction =
  | "connection-allowed"
  | "packet-denied"
  | "audit-would-deny"
  | "connection-closed"
  | "connection-cut";

export interface FlowParty {
  endpoint?: string;
  identity?: number;
}

/** One flow record (Elastic Common Schema names, nested). */
export interface FlowRecord {
  "@timestamp": string;
  event: { action: FlowAction; outcome?: string; reason?: string };
  source: { ip: string; port?: number };
  destination: { ip: string; port?: number };
  network: { transport: string; direction?: string };
  rule?: { name?: string; ruleset?: string };
  palisade: {
    tenant: string;
    node?: string;
    source?: FlowParty;
    destination?: FlowParty;
    packets?: number;
    bytes?: number;
    suppressed?: number;
    audit?: { rule: string };
  };
}

export interface ExplainResponse {
  revision: number;
  text: string;
  detail: string;
}

export const api = {
  status: () => getJson<ServerStatus>("/status"),
  tenants: async () => {
    const list = await getJson<{ items: { metadata: { name: string } }[] }>("/tenants");
    return list.items.map((t) => t.metadata.name);
  },
  map: (tenant: string, groupBy: string) =>
    getJson<TenantMap>(
      `/tenants/${encodeURIComponent(tenant)}/map?groupBy=${encodeURIComponent(groupBy)}`,
    ),
  rules: (tenant: string) => getJson<RuleHitsList>(`/tenants/${encodeURIComponent(tenant)}/rules`),
  explain: (request: { from: string; to: string; proto: string; port?: number }) =>
    postJson<ExplainResponse>("/explain", request),
};

/**
 * Follows `GET /api/v1/flows?follow=true`: calls `onRecord` for every
 * record (history first, then live ones) until `signal` aborts. Resolves
 * when the stream ends; rejects on an error answer.
 */
export async function followFlows(
  tenant: string,
  since: string,
  onRecord: (record: FlowRecord) => void,
  signal: AbortSignal,
): Promise<void> {
  const query = new URLSearchParams({ tenant, since, follow: "true" });
  const response = await check(
    await fetch(`/api/v1/flows?${query}`, { headers: headers(), signal }),
  );
  if (!response.body) {
    return;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      return;
    }
    buffer += value;
    let newline: number;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      // Empty lines keep the stream alive.
      if (line) {
        onRecord(JSON.parse(line) as FlowRecord);
      }
    }
  }
}

/** `tenant:name` of a record's end, or `tenant:ip` when it is no endpoint. */
export function endName(record: FlowRecord, end: "source" | "destination"): string {
  const endpoint = record.palisade[end]?.endpoint;
  if (endpoint) {
    return endpoint.includes(":") ? endpoint : `${record.palisade.tenant}:${endpoint}`;
  }
  return `${record.palisade.tenant}:${record[end].ip}`;
}

/** Whether a record's end is an endpoint. */
export function isEndpoint(record: FlowRecord, end: "source" | "destination"): boolean {
  return Boolean(record.palisade[end]?.endpoint);
}

/** `tcp/5432`, `icmp`. */
export function service(record: FlowRecord): string {
  const port = record.destination.port;
  return port ? `${record.network.transport}/${port}` : record.network.transport;
}

export type Verdict = "allow" | "deny" | "audit";

export function verdictOf(record: FlowRecord): Verdict {
  switch (record.event.action) {
    case "packet-denied":
    case "connection-cut":
      return "deny";
    case "audit-would-deny":
      return "audit";
    default:
      return "allow";
  }
}
