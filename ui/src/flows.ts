// The flows the page has seen, placed on the map's groups: which group a
// record's source and destination belong to (the world when an end is no
// endpoint), and how many records each observed edge stands for.

import { endName, isEndpoint, verdictOf } from "./api";
import type { FlowRecord, Verdict } from "./api";
import { WORLD, observedId } from "./graph";

/** At most this many records are kept in the page. */
const KEEP = 2000;

/** A record and where it sits on the map. */
export interface Observed {
  record: FlowRecord;
  verdict: Verdict;
  /** Group ids; undefined when an endpoint is not on the map. */
  from?: string;
  to?: string;
}

export class FlowStore {
  private records: Observed[] = [];
  private counts = new Map<string, number>();

  constructor(private groupOf: (ref: string) => string | undefined) {}

  private place(record: FlowRecord): Observed {
    const where = (end: "source" | "destination") =>
      isEndpoint(record, end) ? this.groupOf(endName(record, end)) : WORLD;
    return { record, verdict: verdictOf(record), from: where("source"), to: where("destination") };
  }

  private count(o: Observed): number {
    if (o.from === undefined || o.to === undefined) {
      return 0;
    }
    const id = observedId(o.verdict, o.from, o.to);
    // Rate-limited records stand for the ones suppressed before them too.
    const n = (this.counts.get(id) ?? 0) + 1 + (o.record.palisade.suppressed ?? 0);
    this.counts.set(id, n);
    return n;
  }

  /** Adds a record; returns it placed, with its edge's new count. */
  add(record: FlowRecord): { observed: Observed; count: number } {
    const observed = this.place(record);
    this.records.push(observed);
    if (this.records.length > KEEP) {
      this.records.splice(0, this.records.length - KEEP);
    }
    return { observed, count: this.count(observed) };
  }

  /** Places every record again (the map's groups changed). */
  regroup(groupOf: (ref: string) => string | undefined): void {
    this.groupOf = groupOf;
    this.counts.clear();
    this.records = this.records.map((o) => this.place(o.record));
    for (const o of this.records) {
      this.count(o);
    }
  }

  /** Every observed edge: verdict, groups and count. */
  edges(): { verdict: Verdict; from: string; to: string; count: number }[] {
    const out = new Map<string, { verdict: Verdict; from: string; to: string; count: number }>();
    for (const o of this.records) {
      if (o.from === undefined || o.to === undefined) {
        continue;
      }
      const id = observedId(o.verdict, o.from, o.to);
      out.set(id, { verdict: o.verdict, from: o.from, to: o.to, count: this.counts.get(id) ?? 0 });
    }
    return [...out.values()];
  }

  /** The newest first. */
  newest(filter: (o: Observed) => boolean, limit: number): Observed[] {
    const out: Observed[] = [];
    for (let i = this.records.length - 1; i >= 0 && out.length < limit; i--) {
      if (filter(this.records[i])) {
        out.push(this.records[i]);
      }
    }
    return out;
  }

  clear(): void {
    this.records = [];
    this.counts.clear();
  }
}
