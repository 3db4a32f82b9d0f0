/**
 * bty-web's Prometheus metrics, in the text exposition format (version 0.0.4), written here
 * rather than pulled in: counters, gauges and histograms with labels, `# HELP` / `# TYPE`
 * lines, and label values escaped (`\\`, `\"`, `\n`).
 *
 * What is measured: requests by route pattern and status (never the raw URL: one series per
 * route, whatever MACs the fleet has), their duration, PXE offers by `offer_kind`, flashes by
 * outcome, SSE subscribers and the ones dropped, and database query time.
 *
 * Each app has its own set (`metricsOf(ctx)`), so two servers in one process (tests) never mix
 * their counts.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type {
  KyselyPlugin,
  PluginTransformQueryArgs,
  PluginTransformResultArgs,
  QueryResult,
  RootOperationNode,
  UnknownRow,
} from 'kysely';
import type { WebContext } from './context.ts';
import { textResponse, type RouteDoc } from './openapi.ts';

export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** A label value as the text format wants it inside double quotes. */
export function escapeLabelValue(value: string): string {
  return value.replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`));
}

/** HELP text escapes only the backslash and the line feed. */
function escapeHelp(text: string): string {
  return text.replace(/[\\\n]/g, (c) => (c === '\n' ? '\\n' : '\\\\'));
}

export function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

function labelText(names: readonly string[], values: readonly string[], extra = ''): string {
  const parts = names.map((n, i) => `${n}="${escapeLabelValue(values[i] ?? '')}"`);
  if (extra) parts.push(extra);
  return parts.length === 0 ? '' : `{${parts.join(',')}}`;
}

type LabelValues<L extends string> = Readonly<Record<L, string>>;

interface Series<T> {
  values: string[];
  data: T;
}

/** The shared part: a name, help, label names, and one series per distinct label values. */
abstract class Metric<L extends string, T> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly L[];
  abstract readonly type: 'counter' | 'gauge' | 'histogram';
  protected readonly series = new Map<string, Series<T>>();

  constructor(name: string, help: string, labelNames: readonly L[]) {
    if (!METRIC_NAME.test(name)) throw new Error(`invalid metric name: ${name}`);
    for (const l of labelNames) {
      if (!LABEL_NAME.test(l) || l.startsWith('__') || l === 'le') {
        throw new Error(`invalid label name for ${name}: ${l}`);
      }
    }
    this.name = name;
    this.help = help;
    this.labelNames = labelNames;
  }

  protected abstract fresh(): T;

  /** The series for these label values, created on first use. */
  protected at(labels: LabelValues<L>): T {
    const values = this.labelNames.map((n) => labels[n]);
    // Label values come from code (route patterns, statuses, kinds): NUL never occurs in them.
    const key = values.length === 1 ? values[0]! : values.join('\u0000');
    let s = this.series.get(key);
    if (s === undefined) {
      s = { values, data: this.fresh() };
      this.series.set(key, s);
    }
    return s.data;
  }

  protected abstract sampleLines(s: Series<T>): string[];

  render(): string {
    const lines = [
      `# HELP ${this.name} ${escapeHelp(this.help)}`,
      `# TYPE ${this.name} ${this.type}`,
    ];
    // A metric without labels always has its one series, even before anything happened.
    if (this.labelNames.length === 0 && this.series.size === 0) this.at({} as LabelValues<L>);
    for (const s of this.series.values()) lines.push(...this.sampleLines(s));
    return lines.join('\n') + '\n';
  }
}

export class Counter<L extends string = never> extends Metric<L, { value: number }> {
  readonly type = 'counter';

  protected fresh() {
    return { value: 0 };
  }

  inc(labels: LabelValues<L>, by = 1): void {
    if (!(by >= 0)) throw new Error(`${this.name}: a counter only goes up (got ${by})`);
    this.at(labels).value += by;
  }

  get(labels: LabelValues<L>): number {
    return this.at(labels).value;
  }

  protected sampleLines(s: Series<{ value: number }>): string[] {
    return [`${this.name}${labelText(this.labelNames, s.values)} ${formatValue(s.data.value)}`];
  }
}

export class Gauge<L extends string = never> extends Metric<L, { value: number }> {
  readonly type = 'gauge';

  protected fresh() {
    return { value: 0 };
  }

  set(labels: LabelValues<L>, value: number): void {
    this.at(labels).value = value;
  }

  protected sampleLines(s: Series<{ value: number }>): string[] {
    return [`${this.name}${labelText(this.labelNames, s.values)} ${formatValue(s.data.value)}`];
  }
}

interface HistogramData {
  /** Per-bucket (not cumulative) counts; the last slot is +Inf. */
  counts: number[];
  sum: number;
  count: number;
}

export class Histogram<L extends string = never> extends Metric<L, HistogramData> {
  readonly type = 'histogram';
  readonly buckets: readonly number[];

  constructor(name: string, help: string, labelNames: readonly L[], buckets: readonly number[]) {
    super(name, help, labelNames);
    if (buckets.length === 0 || buckets.some((b, i) => i > 0 && b <= buckets[i - 1]!)) {
      throw new Error(`${name}: buckets must be increasing`);
    }
    this.buckets = buckets;
  }

  protected fresh(): HistogramData {
    return { counts: new Array<number>(this.buckets.length + 1).fill(0), sum: 0, count: 0 };
  }

  observe(labels: LabelValues<L>, value: number): void {
    const d = this.at(labels);
    let i = 0;
    while (i < this.buckets.length && value > this.buckets[i]!) i++;
    d.counts[i]!++;
    d.sum += value;
    d.count++;
  }

  protected sampleLines(s: Series<HistogramData>): string[] {
    const lines: string[] = [];
    let cumulative = 0;
    const les = [...this.buckets.map(formatValue), '+Inf'];
    les.forEach((le, i) => {
      cumulative += s.data.counts[i]!;
      const labels = labelText(this.labelNames, s.values, `le="${le}"`);
      lines.push(`${this.name}_bucket${labels} ${cumulative}`);
    });
    const labels = labelText(this.labelNames, s.values);
    lines.push(`${this.name}_sum${labels} ${formatValue(s.data.sum)}`);
    lines.push(`${this.name}_count${labels} ${s.data.count}`);
    return lines;
  }
}

interface Renderable {
  readonly name: string;
  render(): string;
}

export class Registry {
  private readonly metrics: Renderable[] = [];

  add<M extends Renderable>(metric: M): M {
    if (this.metrics.some((m) => m.name === metric.name)) {
      throw new Error(`metric registered twice: ${metric.name}`);
    }
    this.metrics.push(metric);
    return metric;
  }

  render(): string {
    return this.metrics.map((m) => m.render()).join('');
  }
}

// ---------------------------------------------------------------------------------------------
// bty-web's metrics
// ---------------------------------------------------------------------------------------------

const REQUEST_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const DB_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];

/** The route label of requests no route matched (404s, probes): one series for all of them. */
export const UNMATCHED_ROUTE = 'unmatched';

export interface WebMetrics {
  registry: Registry;
  requests: Counter<'method' | 'route' | 'status'>;
  requestSeconds: Histogram<'route'>;
  pxeOffers: Counter<'offer_kind'>;
  flashes: Counter<'outcome'>;
  sseSubscribers: Gauge;
  sseDropped: Counter<'reason'>;
  dbQuerySeconds: Histogram<'operation'>;
  /** Fastify `onResponse` hook counting every answered request. */
  onResponse: (req: FastifyRequest, reply: FastifyReply, done: () => void) => void;
  /** A Kysely plugin timing each query: `db.withPlugin(metrics.dbTiming)`. */
  dbTiming: KyselyPlugin;
}

export function createWebMetrics(): WebMetrics {
  const registry = new Registry();
  const requests = registry.add(
    new Counter('bty_web_http_requests_total', 'HTTP requests answered, by route pattern.', [
      'method',
      'route',
      'status',
    ] as const),
  );
  const requestSeconds = registry.add(
    new Histogram(
      'bty_web_http_request_duration_seconds',
      'Time from request to the end of the response, by route pattern.',
      ['route'] as const,
      REQUEST_BUCKETS,
    ),
  );
  const pxeOffers = registry.add(
    new Counter('bty_web_pxe_offers_total', 'Boot offers made to /pxe/{mac}, by offer kind.', [
      'offer_kind',
    ] as const),
  );
  const flashes = registry.add(
    new Counter('bty_web_flashes_total', 'Flash results reported by the live environment.', [
      'outcome',
    ] as const),
  );
  const sseSubscribers = registry.add(
    new Gauge('bty_web_sse_subscribers', 'Open live-event (SSE) streams.', []),
  );
  const sseDropped = registry.add(
    new Counter(
      'bty_web_sse_dropped_total',
      'Live-event streams cut off because the client did not keep up.',
      ['reason'] as const,
    ),
  );
  const dbQuerySeconds = registry.add(
    new Histogram(
      'bty_web_db_query_duration_seconds',
      'Database query time as the server sees it (connection wait included), by statement kind.',
      ['operation'] as const,
      DB_BUCKETS,
    ),
  );

  // transformQuery runs as the query is compiled for execution, transformResult when its rows
  // are back: the time between is the query's latency. A failed query never reaches
  // transformResult and is not observed (its entry goes with its id).
  const started = new WeakMap<object, { t0: number; operation: string }>();
  const dbTiming: KyselyPlugin = {
    transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
      started.set(args.queryId, { t0: performance.now(), operation: operationOf(args.node.kind) });
      return args.node;
    },
    transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
      const s = started.get(args.queryId);
      if (s !== undefined) {
        started.delete(args.queryId);
        dbQuerySeconds.observe({ operation: s.operation }, (performance.now() - s.t0) / 1000);
      }
      return Promise.resolve(args.result);
    },
  };

  return {
    registry,
    requests,
    requestSeconds,
    pxeOffers,
    flashes,
    sseSubscribers,
    sseDropped,
    dbQuerySeconds,
    onResponse(req, reply, done) {
      const route = req.routeOptions.url ?? UNMATCHED_ROUTE;
      requests.inc({ method: req.method, route, status: String(reply.statusCode) });
      requestSeconds.observe({ route }, reply.elapsedTime / 1000);
      done();
    },
    dbTiming,
  };
}

function operationOf(kind: string): string {
  switch (kind) {
    case 'SelectQueryNode':
      return 'select';
    case 'InsertQueryNode':
      return 'insert';
    case 'UpdateQueryNode':
      return 'update';
    case 'DeleteQueryNode':
      return 'delete';
    default:
      return 'other';
  }
}

const perApp = new WeakMap<WebContext, WebMetrics>();

/** This app's metrics (created on first use). */
export function metricsOf(ctx: WebContext): WebMetrics {
  let m = perApp.get(ctx);
  if (m === undefined) {
    m = createWebMetrics();
    perApp.set(ctx, m);
  }
  return m;
}

/**
 * `GET /metrics`. Open, as Prometheus endpoints customarily are (scrapers carry no session):
 * it shows counts and timings, never a MAC, a label or a secret.
 */
export function registerMetricsRoutes(app: FastifyInstance, ctx: WebContext): void {
  const metrics = metricsOf(ctx);
  const schema: RouteDoc = {
    summary: 'Prometheus metrics',
    description:
      'Request counts and durations by route, PXE offers, flashes, SSE subscribers and database time, in the Prometheus text format.',
    tags: ['metrics'],
    response: { 200: textResponse(METRICS_CONTENT_TYPE, 'Text exposition format 0.0.4.') },
  };
  app.get('/metrics', { schema }, (_req, reply) =>
    reply.type(METRICS_CONTENT_TYPE).send(metrics.registry.render()),
  );
}
