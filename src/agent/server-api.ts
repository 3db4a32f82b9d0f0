/**
 * The agent's side of bty-web's live-environment API (src/web/routes/live.ts and pxe.ts):
 * `POST /pxe/{mac}/inventory`, `GET /pxe/{mac}/plan`, `POST /pxe/{mac}/progress` and
 * `POST /pxe/{mac}/status`. Upstream bty-web speaks the same plan, inventory and status bodies.
 */
import type { FlashProgress } from '../core/progress.ts';

export const PLAN_TIMEOUT_MS = 15_000;
export const POST_TIMEOUT_MS = 10_000;
/** Progress is advisory: a slow server must not hold the next report (or the status) long. */
export const PROGRESS_TIMEOUT_MS = 5_000;
/** A plan is a few hundred bytes; anything this large is not one. */
const PLAN_MAX_BYTES = 1024 * 1024;
/** The server refuses longer reasons and progress messages (routes/pxe.ts, routes/live.ts). */
export const REASON_MAX_CHARS = 500;

export type AgentPlan =
  | {
      mode: 'flash';
      image: string;
      target_disk_serial: string;
      name: string | null;
      format: string | null;
      disk_image_sha: string | null;
    }
  | { mode: 'interactive'; catalog: string | null }
  | { mode: 'inventory' }
  | { mode: 'exit' }
  /** A mode this agent does not know: it falls back to the wizard. */
  | { mode: 'unknown'; value: string };

/**
 * A plan the agent cannot act on; the message is the banner the wizard fallback shows.
 * `retryable`: a network error or a 5xx, which a moment later may well be a plan (a server
 * restarting, a switch port still coming up); a 4xx or a malformed plan will not change.
 */
export class PlanError extends Error {
  readonly retryable: boolean;

  constructor(message: string, retryable = false) {
    super(message);
    this.retryable = retryable;
  }
}

export class ServerApi {
  readonly base: string;
  readonly mac: string;

  constructor(base: string, mac: string) {
    this.base = base.replace(/\/+$/, '');
    this.mac = mac;
  }

  url(suffix: string): string {
    // A canonical MAC (hex digits and colons) needs no escaping in a path.
    return `${this.base}/pxe/${this.mac}${suffix}`;
  }

  /** The catalog the wizard loads when the plan names none. */
  get catalogUrl(): string {
    return `${this.base}/catalog.toml`;
  }

  async getPlan(): Promise<AgentPlan> {
    let text: string;
    let status = 0;
    try {
      const res = await fetch(this.url('/plan'), {
        headers: { accept: 'application/json' },
        signal: AbortSignal.timeout(PLAN_TIMEOUT_MS),
      });
      status = res.status;
      text = await readCapped(res, PLAN_MAX_BYTES);
      if (!res.ok) throw new Error(`HTTP ${res.status}: ${text.slice(0, 200).trim()}`);
    } catch (err) {
      // No answer at all, a 5xx, or a 2xx whose body broke off may be a plan a moment later; a
      // 4xx or an oversized answer is the server's final word.
      const retryable =
        !(err instanceof OversizeError) &&
        (status === 0 || status >= 500 || (status >= 200 && status < 300));
      throw new PlanError(`plan fetch failed: ${describeFetchError(err)}`, retryable);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new PlanError(`plan fetch failed: the answer is not JSON: ${text.slice(0, 200)}`);
    }
    return parsePlan(json);
  }

  /** Posts JSON; resolves with the HTTP status, rejects on a transport failure or timeout. */
  async post(suffix: string, body: unknown, timeoutMs = POST_TIMEOUT_MS): Promise<number> {
    try {
      const res = await fetch(this.url(suffix), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
      await res.arrayBuffer().catch(() => undefined);
      return res.status;
    } catch (err) {
      throw new Error(describeFetchError(err), { cause: err });
    }
  }

  postProgress(event: FlashProgress): Promise<number> {
    return this.post('/progress', progressBody(event), PROGRESS_TIMEOUT_MS);
  }

  /** `{"status":"done"}` or `{"status":"failed","reason":…}` (reason trimmed, ≤ 500 chars). */
  postStatus(status: 'done' | 'failed', reason?: string): Promise<number> {
    const trimmed = (reason ?? '').trim().slice(0, REASON_MAX_CHARS).trim();
    return this.post('/status', trimmed === '' ? { status } : { status, reason: trimmed });
  }
}

/** Validates the plan document; a flash plan without an image or a serial is refused. */
export function parsePlan(json: unknown): AgentPlan {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new PlanError(`plan fetch failed: the plan is not a JSON object: ${preview(json)}`);
  }
  const plan = json as Record<string, unknown>;
  const text = (key: string): string | null => {
    const value = plan[key];
    return typeof value === 'string' && value.trim() !== '' ? value : null;
  };
  const mode = plan.mode;
  switch (mode) {
    case 'flash': {
      const image = text('image');
      const serial = text('target_disk_serial');
      if (image === null || serial === null) {
        throw new PlanError(
          `server returned mode=flash but missing image/target_disk_serial: ${preview(json)}`,
        );
      }
      return {
        mode,
        image,
        target_disk_serial: serial,
        name: text('name'),
        format: text('format'),
        disk_image_sha: text('disk_image_sha'),
      };
    }
    case 'interactive':
      return { mode, catalog: text('catalog') };
    case 'inventory':
    case 'exit':
      return { mode };
    default:
      return { mode: 'unknown', value: typeof mode === 'string' ? mode : preview(mode) };
  }
}

/**
 * The body the server's parseProgress accepts: the engine's event with whole byte counts and a
 * message within the server's limit (an out-of-range field would get the report refused).
 */
export function progressBody(event: FlashProgress): Record<string, unknown> {
  const count = (n: number) => (Number.isFinite(n) && n > 0 ? Math.floor(n) : 0);
  const countOrNull = (n: number | null | undefined) =>
    n === null || n === undefined ? null : count(n);
  const body: Record<string, unknown> = {
    phase: event.phase,
    bytes_done: count(event.bytes_done),
    bytes_total: countOrNull(event.bytes_total),
    rate_bps: count(event.rate_bps),
    eta_seconds: event.eta_seconds === null ? null : count(event.eta_seconds),
    resumes: count(event.resumes),
  };
  if (event.source_bytes_done !== undefined) {
    body.source_bytes_done = count(event.source_bytes_done);
    body.source_bytes_total = countOrNull(event.source_bytes_total);
  }
  if (event.message !== undefined) body.message = event.message.slice(0, REASON_MAX_CHARS);
  return body;
}

class OversizeError extends Error {}

async function readCapped(res: Response, maxBytes: number): Promise<string> {
  if (res.body === null) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
    size += chunk.byteLength;
    // Leaving the loop cancels the rest of the body.
    if (size > maxBytes) throw new OversizeError(`the answer is larger than ${maxBytes} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** fetch's "fetch failed" hides the reason in `cause` (ECONNREFUSED, a DNS error, …). */
export function describeFetchError(err: unknown): string {
  if (err instanceof Error) {
    if (err.name === 'TimeoutError') return 'no answer in time (timed out)';
    const cause = err.cause;
    if (cause instanceof Error) {
      const code = (cause as NodeJS.ErrnoException).code;
      const why =
        code && !cause.message.includes(code) ? `${code} ${cause.message}` : cause.message;
      return `${err.message}: ${why}`;
    }
    return err.message;
  }
  return String(err);
}

function preview(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}
