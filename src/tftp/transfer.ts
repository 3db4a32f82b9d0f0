/**
 * One TFTP read transfer on its own UDP socket (its TID), and the host that runs transfers: the
 * server's own thread, or each worker thread (src/tftp/worker.ts). A transfer is started from a
 * TransferSpec, which only holds plain data (a worker receives it as a message).
 *
 * The socket is connected to the client: sends carry no address (no per-packet lookup in Node,
 * no per-packet route lookup in the kernel), and the kernel drops packets from anyone else before
 * they reach us (see "Every transfer runs on its own ephemeral UDP port" in docs/tftp.md).
 *
 * A window of DATA packets goes out per acknowledgement, each packet a 4-byte header plus a
 * subarray of the file's bytes (shared by all transfers of a cached file). Retransmission follows
 * an adaptive timeout (measured round trips, doubled on each loss, capped by the client's
 * `timeout` option or `retransmitMs`) with a bounded number of retries. Duplicate ACKs never
 * cause sends (the Sorcerer's Apprentice bug); an ACK for an earlier block of the window restarts
 * sending after it.
 */
import { createSocket, type Socket, type SocketType } from 'node:dgram';
import { open } from 'node:fs/promises';
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import { ChunkedSource, MemorySource, type BlockSource, type CachedSource } from './files.ts';
import {
  encodeError,
  encodeOack,
  ERR,
  OP,
  parseError,
  TftpProtocolError,
  type TftpErrorCode,
  type TransferMode,
} from './packet.ts';

const MAX_BACKOFF_MS = 16_000;

/** What a transfer needs of the server's settings (plain data: it crosses to workers). */
export interface TransferSettings {
  host: string;
  type: SocketType;
  retransmitMs: number;
  minRetransmitMs: number;
  maxRetries: number;
}

export interface Negotiated {
  blksize: number;
  windowsize: number;
  /** The client's `timeout` option, in ms, when it sent one. */
  timeoutMs: number | undefined;
  /** Options acknowledged, in the client's order; empty: no OACK, DATA 1 starts the transfer. */
  acknowledged: Array<[string, string]>;
}

export interface TransferSpec {
  peerAddress: string;
  peerPort: number;
  filename: string;
  mode: TransferMode;
  source: CachedSource;
  negotiated: Negotiated;
  /** The log line's start: `tftp: <client> RRQ "<file>"`. */
  what: string;
}

/** Bytes a source sends, when known before sending (netascii of a large file is not). */
export function sourceSize(source: CachedSource): number | undefined {
  if (source.kind === 'memory') return source.bytes.length;
  return source.mode === 'octet' ? source.size : undefined;
}

/**
 * Node's dgram resolves every destination through a lookup function, by default on the next
 * tick even for an IP literal. Our destinations are always the literal a request came from.
 */
function literalLookup(
  address: string,
  family: unknown,
  callback: (err: Error | null, address: string, family: number) => void,
): void {
  callback(null, address, isIP(address) || 4);
}

export function openSocket(type: SocketType): Socket {
  return createSocket({ type, lookup: literalLookup });
}

/** How a host reports back: a transfer ended (`line` null: silently), or could not start. */
export interface TransferEvents {
  ended(id: number, line: string | null): void;
  refused(id: number, error: TftpProtocolError): void;
}

/**
 * Runs transfers on the current thread. The server's thread uses one directly when it runs no
 * workers; each worker runs one and relays its events to the server.
 */
/** Round trips below this are polled for rather than slept through (milliseconds). */
const BUSY_POLL_MAX_RTT_MS = 0.2;
/**
 * With more transfers than this on a thread its loop is busy anyway, and in a storm the cores are
 * better left to the others (measured: polling then cost the 32-client case a few percent).
 */
const BUSY_POLL_MAX_TRANSFERS = 2;
/** Transfers running on this thread. */
let liveTransfers = 0;
let pollUntil = 0;
let polling = false;

/**
 * Adaptive busy-polling, as the kernel's `busy_poll` does for sockets: a thread that sleeps in
 * epoll pays a wake-up (tens of µs on a VM) for every ACK, which on a fast link is most of a
 * lock-step block's cost. Until `deadline` the loop is kept turning with immediates, so its poll
 * phase checks the sockets without sleeping; other I/O is served as usual. Only links measured
 * faster than BUSY_POLL_MAX_RTT_MS poll, never longer than that per block, and only while the
 * thread has few transfers.
 */
function awaitSoon(deadline: number): void {
  if (deadline > pollUntil) pollUntil = deadline;
  if (polling) return;
  polling = true;
  const tick = (): void => {
    if (performance.now() < pollUntil) setImmediate(tick);
    else polling = false;
  };
  setImmediate(tick);
}

export class TransferHost {
  private readonly settings: TransferSettings;
  private readonly events: TransferEvents;
  private readonly transfers = new Map<number, Transfer>();
  /** Transfers still opening their file and socket. */
  private readonly setups = new Map<number, { cancelled: boolean; done: Promise<void> }>();
  /** Sockets of ended transfers still closing. */
  private readonly closing = new Set<Promise<void>>();

  constructor(settings: TransferSettings, events: TransferEvents) {
    this.settings = settings;
    this.events = events;
  }

  get size(): number {
    return this.transfers.size + this.setups.size;
  }

  start(id: number, spec: TransferSpec): void {
    const setup = { cancelled: false, done: Promise.resolve() };
    this.setups.set(id, setup);
    setup.done = this.open(id, spec, setup);
  }

  private async open(id: number, spec: TransferSpec, setup: { cancelled: boolean }) {
    let source: BlockSource | undefined;
    let socket: Socket | undefined;
    try {
      source = await openSource(spec.source);
      socket = openSocket(this.settings.type);
      await bindAndConnect(socket, this.settings.host, spec.peerPort, spec.peerAddress);
      if (setup.cancelled) throw new TftpProtocolError(ERR.notDefined, 'server stopping');
      this.setups.delete(id);
      liveTransfers++;
      const transfer = new Transfer(this.settings, socket, spec, source, (line) => {
        liveTransfers--;
        this.transfers.delete(id);
        this.closing.add(transfer.closed);
        void transfer.closed.then(() => this.closing.delete(transfer.closed));
        this.events.ended(id, line);
      });
      this.transfers.set(id, transfer);
      transfer.begin();
    } catch (err) {
      this.setups.delete(id);
      source?.close();
      socket?.close();
      this.events.refused(id, asProtocolError(err));
    }
  }

  /** The client repeated its request: answer it if nothing was acknowledged, else end it. */
  repeat(id: number): boolean {
    const transfer = this.transfers.get(id);
    if (transfer === undefined) return this.setups.has(id); // Still opening: it answers soon.
    if (transfer.answerRepeatedRequest()) return true;
    transfer.stop(null);
    return false;
  }

  stop(id: number, reason: string | null): void {
    const setup = this.setups.get(id);
    if (setup) setup.cancelled = true;
    this.transfers.get(id)?.stop(reason);
  }

  /** Ends every transfer (ERROR 0 `reason`) and resolves once all their sockets are closed. */
  async stopAll(reason: string): Promise<void> {
    for (const setup of this.setups.values()) setup.cancelled = true;
    for (const transfer of [...this.transfers.values()]) transfer.stop(reason);
    // A cancelled setup closes what it opened and reports itself refused.
    await Promise.all([...this.setups.values()].map((setup) => setup.done));
    await Promise.all([...this.closing]);
  }
}

async function openSource(source: CachedSource): Promise<BlockSource> {
  if (source.kind === 'memory') return new MemorySource(source.bytes);
  try {
    return new ChunkedSource(await open(source.path, 'r'), source.size, source.mode);
  } catch (err) {
    throw new TftpProtocolError(ERR.accessViolation, `access violation: ${String(err)}`);
  }
}

function bindAndConnect(socket: Socket, host: string, port: number, address: string) {
  return new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind({ port: 0, address: host, exclusive: true }, () => {
      socket.connect(port, address, () => {
        socket.off('error', reject);
        resolve();
      });
    });
  });
}

export function asProtocolError(err: unknown): TftpProtocolError {
  if (err instanceof TftpProtocolError) return err;
  return new TftpProtocolError(ERR.notDefined, (err as Error).message ?? String(err));
}

/** File names and option values come from the network: show them without control bytes. */
export function printable(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, '?');
}

type Phase = 'oack' | 'data' | 'done';

class Transfer {
  private readonly settings: TransferSettings;
  private readonly socket: Socket;
  private readonly spec: TransferSpec;
  private readonly source: BlockSource;
  private readonly blksize: number;
  private readonly windowsize: number;
  private readonly onEnd: (line: string | null) => void;
  private readonly startedAt = performance.now();
  private readonly rtoCeiling: number;
  /** Resolves once the socket is closed. */
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;

  private phase: Phase;
  /** Highest block the client acknowledged (absolute, not wrapped). */
  private acked = 0;
  /** Last block of the window on the wire. */
  private windowEnd = 0;
  /** The transfer's last block, once known (a short block ends it). */
  private lastBlock: number | undefined;
  private lastBlockBytes = 0;
  private nextStart = 1;
  private loading = false;

  private timer: NodeJS.Timeout | undefined;
  private timerDue = 0;
  private deadline = 0;
  private retries = 0;
  private rto: number;
  private srtt: number | undefined;
  private rttvar = 0;
  private sentAt = 0;
  private sampleValid = false;

  constructor(
    settings: TransferSettings,
    socket: Socket,
    spec: TransferSpec,
    source: BlockSource,
    onEnd: (line: string | null) => void,
  ) {
    this.settings = settings;
    this.socket = socket;
    this.spec = spec;
    this.source = source;
    this.blksize = spec.negotiated.blksize;
    this.windowsize = spec.negotiated.windowsize;
    this.onEnd = onEnd;
    this.rtoCeiling = spec.negotiated.timeoutMs ?? settings.retransmitMs;
    this.rto = this.rtoCeiling;
    this.phase = spec.negotiated.acknowledged.length > 0 ? 'oack' : 'data';
    if (source.size !== undefined) this.lastBlock = Math.floor(source.size / this.blksize) + 1;
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    // Connected: only the client's packets arrive here.
    socket.on('message', (msg) => this.onMessage(msg));
    // ICMP errors for a vanished client (connection refused): the timer ends the transfer.
    socket.on('error', () => {});
  }

  begin(): void {
    if (this.phase === 'oack') this.sendOack(false);
    else this.sendWindow(1, false);
  }

  /** The client sent its request again: if it has seen nothing from us yet, resend at once. */
  answerRepeatedRequest(): boolean {
    if (this.phase === 'done' || this.acked > 0) return false;
    if (this.phase === 'oack') this.sendOack(true);
    else this.sendWindow(1, true);
    return true;
  }

  private sendOack(retransmission: boolean): void {
    this.socket.send(encodeOack(this.spec.negotiated.acknowledged));
    this.sentAt = performance.now();
    this.sampleValid = !retransmission;
    this.armTimer();
  }

  /** Sends blocks first.. up to a window; reads first when a chunked source needs it. */
  private sendWindow(first: number, retransmission: boolean): void {
    this.nextStart = first;
    if (this.loading) return; // The read in progress sends from nextStart when it completes.
    const blksize = this.blksize;
    const count =
      this.lastBlock === undefined
        ? this.windowsize
        : Math.min(this.windowsize, this.lastBlock - first + 1);
    const offset = (first - 1) * blksize;
    let pending: Promise<void> | undefined;
    try {
      pending = this.source.ensure(offset, count * blksize);
    } catch (err) {
      this.fail(ERR.notDefined, `read failed: ${(err as Error).message}`);
      return;
    }
    if (pending) {
      this.loading = true;
      pending.then(
        () => {
          this.loading = false;
          if (this.phase === 'data') this.sendWindow(this.nextStart, retransmission);
        },
        (err: unknown) => {
          this.loading = false;
          this.fail(ERR.notDefined, `read failed: ${(err as Error).message}`);
        },
      );
      return;
    }
    // Fresh headers per window: a send the kernel could not take at once (a full socket buffer)
    // is queued by Node with its buffers, so a header must not be rewritten before it left.
    const headers = Buffer.allocUnsafe(4 * count);
    const socket = this.socket;
    let block = first;
    let sent = first - 1;
    for (let j = 0, at = 0; j < count; j++, block++, at += 4) {
      const data = this.source.view(offset + j * blksize, blksize);
      headers[at] = 0;
      headers[at + 1] = OP.DATA;
      headers[at + 2] = (block >> 8) & 0xff;
      headers[at + 3] = block & 0xff;
      const header = headers.subarray(at, at + 4);
      socket.send(data.length > 0 ? [header, data] : header);
      sent = block;
      if (data.length < blksize) {
        this.lastBlock = block;
        this.lastBlockBytes = data.length;
        break;
      }
    }
    // The last block on the wire: an ACK for it asks for fresh data (a valid round-trip sample).
    this.windowEnd = sent;
    this.sentAt = performance.now();
    this.sampleValid = !retransmission;
    this.armTimer();
    // On a link whose round trip is shorter than waking a sleeping thread, keep this thread's
    // loop polling until the ACK is due instead of sleeping (see awaitSoon).
    if (
      this.srtt !== undefined &&
      this.srtt < BUSY_POLL_MAX_RTT_MS &&
      liveTransfers <= BUSY_POLL_MAX_TRANSFERS
    ) {
      awaitSoon(this.sentAt + Math.min(3 * this.srtt, BUSY_POLL_MAX_RTT_MS));
    }
  }

  private onMessage(msg: Buffer): void {
    if (this.phase === 'done') return;
    const op = msg.length >= 4 ? (msg[0]! << 8) | msg[1]! : 0;
    if (op === OP.ACK) {
      this.onAck((msg[2]! << 8) | msg[3]!);
    } else if (op === OP.ERROR) {
      const { code, message } = parseError(msg);
      this.finish(`failed: client sent ERROR ${code} ${printable(message)}`);
    } else {
      this.fail(ERR.illegalOperation, `illegal TFTP operation: opcode ${op} during a read`);
    }
  }

  private onAck(wire: number): void {
    if (this.phase === 'oack') {
      if (wire !== 0) return;
      this.progressed();
      this.phase = 'data';
      this.sendWindow(1, false);
      return;
    }
    const block = this.acked + ((wire - this.acked) & 0xffff);
    // A duplicate, or a stale ACK from before the window: never a reason to send.
    if (block <= this.acked || block > this.windowEnd) return;
    this.acked = block;
    this.progressed();
    if (block === this.lastBlock) {
      this.finish('ok');
      return;
    }
    // The whole window, or a prefix of it (the client lost the block after `block`).
    this.sendWindow(block + 1, block !== this.windowEnd);
  }

  private progressed(): void {
    if (this.sampleValid) {
      const sample = performance.now() - this.sentAt;
      if (this.srtt === undefined) {
        this.srtt = sample;
        this.rttvar = sample / 2;
      } else {
        this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - sample);
        this.srtt = 0.875 * this.srtt + 0.125 * sample;
      }
    }
    this.retries = 0;
    // Progress ends a backoff: without a measured round trip yet, back to the initial timeout.
    this.rto =
      this.srtt === undefined
        ? this.rtoCeiling
        : Math.min(
            Math.max(this.srtt + Math.max(4 * this.rttvar, 10), this.settings.minRetransmitMs),
            this.rtoCeiling,
          );
  }

  /** One timer per transfer: moving the deadline later never touches the timer itself. */
  private armTimer(): void {
    this.deadline = this.sentAt + this.rto;
    if (this.timer !== undefined && this.timerDue <= this.deadline) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timerDue = this.deadline;
    this.timer = setTimeout(() => this.onTimer(), this.rto);
  }

  private onTimer(): void {
    this.timer = undefined;
    if (this.phase === 'done') return;
    const now = performance.now();
    if (now < this.deadline - 1) {
      this.timerDue = this.deadline;
      this.timer = setTimeout(() => this.onTimer(), this.deadline - now);
      return;
    }
    if (++this.retries > this.settings.maxRetries) {
      this.fail(ERR.notDefined, `timed out after ${this.settings.maxRetries} retransmissions`);
      return;
    }
    this.rto = Math.min(this.rto * 2, Math.max(MAX_BACKOFF_MS, this.rtoCeiling));
    if (this.phase === 'oack') this.sendOack(true);
    else this.sendWindow(this.acked + 1, true);
  }

  private fail(code: TftpErrorCode, message: string): void {
    if (this.phase === 'done') return;
    this.socket.send(encodeError(code, message));
    this.finish(`failed: ${message}`);
  }

  /** Ends the transfer; `reason` null ends it without an ERROR packet or log line. */
  stop(reason: string | null): void {
    if (reason !== null) this.fail(ERR.notDefined, reason);
    else this.finish(null);
  }

  private finish(outcome: string | null): void {
    if (this.phase === 'done') return;
    this.phase = 'done';
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.source.close();
    this.socket.close(() => this.resolveClosed());
    if (outcome === null) {
      this.onEnd(null);
      return;
    }
    const bytes =
      outcome === 'ok'
        ? (this.lastBlock! - 1) * this.blksize + this.lastBlockBytes
        : Math.min(this.acked * this.blksize, this.source.size ?? Infinity);
    const acknowledged = this.spec.negotiated.acknowledged;
    const options =
      acknowledged.length > 0 ? acknowledged.map(([k, v]) => `${k}=${v}`).join(' ') : 'no options';
    const ms = Math.round(performance.now() - this.startedAt);
    this.onEnd(
      `tftp: ${this.spec.what} ${this.spec.mode} ${bytes} bytes [${options}] ${outcome} in ${ms} ms`,
    );
  }
}
