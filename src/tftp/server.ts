/**
 * A read-only TFTP server: RFC 1350 reads (octet and netascii) with option negotiation (RFC 2347)
 * for blksize (RFC 2348), tsize and timeout (RFC 2349) and windowsize (RFC 7440).
 *
 * Every transfer runs on its own ephemeral UDP socket (its TID) with one timer. A window of DATA
 * packets goes out per acknowledgement, each packet a 4-byte header plus a subarray of the file's
 * bytes (shared by all transfers of a cached file). Retransmission follows an adaptive timeout
 * (measured round trips, doubled on each loss, capped by the client's `timeout` option or
 * `retransmitMs`) with a bounded number of retries. Duplicate ACKs never cause sends (the
 * Sorcerer's Apprentice bug); an ACK for an earlier block of the window restarts sending after it.
 */
import { createSocket, type RemoteInfo, type Socket, type SocketType } from 'node:dgram';
import { realpath, stat } from 'node:fs/promises';
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import { BtyError } from '../core/errors.ts';
import { FileCache, resolveInRoot, type BlockSource } from './files.ts';
import {
  encodeError,
  encodeOack,
  ERR,
  OP,
  parseError,
  parseRequest,
  TftpProtocolError,
  type TftpErrorCode,
  type TftpRequest,
} from './packet.ts';

export interface TftpServerOptions {
  /** Folder served, read-only; nothing outside it is ever read. */
  root: string;
  /** Listen address; default 0.0.0.0 (an address with ':' listens on IPv6). */
  host?: string;
  /** UDP port; default 69. 0 picks a free port (see address()). */
  port?: number;
  /** Transfers in flight at once (a request beyond gets ERROR 0 "server busy"); default 2000. */
  maxTransfers?: number;
  /** One line per finished, failed or refused transfer. */
  log?: (line: string) => void;
  /** Memory for cached file contents; default 128 MiB. Files above a quarter are read in chunks. */
  cacheBytes?: number;
  /** Largest blksize granted; default 65464 (RFC 2348's maximum). */
  maxBlksize?: number;
  /** Largest windowsize granted; default 64. */
  maxWindowsize?: number;
  /**
   * Retransmission timeout before a round trip was measured, and the ceiling of the measured one,
   * when the client sends no `timeout` option; default 1000 ms. Each retransmission of the same
   * packet doubles the wait (up to 16 s), so a client whose own timer restarts on every packet
   * we send still gets the silence it needs to repeat a lost ACK.
   */
  retransmitMs?: number;
  /**
   * Floor of the adaptive retransmission timeout; default 50 ms. A retransmission the client did
   * not need costs it a duplicate to drop; a late one costs a stall on every loss.
   */
  minRetransmitMs?: number;
  /** Retransmissions of one packet or window before giving up; default 10. */
  maxRetries?: number;
}

export interface TftpServer {
  address(): { address: string; port: number };
  readonly activeTransfers: number;
  close(): Promise<void>;
}

const MAX_BLKSIZE = 65464;
const DEFAULT_BLKSIZE = 512;
const MIN_RTO_MS = 50;
const MAX_BACKOFF_MS = 16_000;

interface Settings {
  rootReal: string;
  host: string;
  type: SocketType;
  maxTransfers: number;
  log: (line: string) => void;
  maxBlksize: number;
  maxWindowsize: number;
  retransmitMs: number;
  minRetransmitMs: number;
  maxRetries: number;
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

function openSocket(type: SocketType): Socket {
  return createSocket({ type, lookup: literalLookup });
}

export async function startTftpServer(options: TftpServerOptions): Promise<TftpServer> {
  let rootReal: string;
  try {
    rootReal = await realpath(options.root);
  } catch (err) {
    throw new BtyError(
      'BTY_ERR_BAD_INPUT',
      `TFTP root ${options.root} cannot be used: ${(err as Error).message}`,
      { hint: 'Give --root an existing folder holding the boot files (e.g. undionly.kpxe).' },
    );
  }
  if (!(await stat(rootReal)).isDirectory()) {
    throw new BtyError('BTY_ERR_BAD_INPUT', `TFTP root ${options.root} is not a folder`, {
      hint: 'Give --root an existing folder holding the boot files (e.g. undionly.kpxe).',
    });
  }
  const host = options.host ?? '0.0.0.0';
  const settings: Settings = {
    rootReal,
    host,
    type: isIP(host) === 6 || host.includes(':') ? 'udp6' : 'udp4',
    maxTransfers: options.maxTransfers ?? 2000,
    log: options.log ?? (() => {}),
    maxBlksize: Math.min(Math.max(options.maxBlksize ?? MAX_BLKSIZE, 8), MAX_BLKSIZE),
    maxWindowsize: Math.min(Math.max(options.maxWindowsize ?? 64, 1), 65535),
    retransmitMs: Math.max(options.retransmitMs ?? 1000, 1),
    minRetransmitMs: Math.max(options.minRetransmitMs ?? MIN_RTO_MS, 1),
    maxRetries: Math.max(options.maxRetries ?? 10, 1),
  };
  const server = new Server(settings, new FileCache(options.cacheBytes ?? 128 * 1024 * 1024));
  await server.listen(options.port ?? 69);
  return server;
}

class Server implements TftpServer {
  private readonly socket: Socket;
  private readonly transfers = new Map<string, Transfer>();
  private readonly starting = new Set<string>();
  private readonly setups = new Set<Promise<void>>();
  private reserved = 0;
  private closed = false;
  readonly settings: Settings;
  readonly cache: FileCache;

  constructor(settings: Settings, cache: FileCache) {
    this.settings = settings;
    this.cache = cache;
    this.socket = openSocket(settings.type);
  }

  listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => {
        this.socket.close();
        reject(err);
      };
      this.socket.once('error', onError);
      this.socket.bind({ port, address: this.settings.host, exclusive: true }, () => {
        this.socket.off('error', onError);
        // A send failure to one client (ICMP unreachable and the like) is no server failure.
        this.socket.on('error', () => {});
        this.socket.on('message', (msg, from) => this.onRequest(msg, from));
        resolve();
      });
    });
  }

  address(): { address: string; port: number } {
    const { address, port } = this.socket.address();
    return { address, port };
  }

  get activeTransfers(): number {
    return this.reserved;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await new Promise<void>((resolve) => this.socket.close(() => resolve()));
    await Promise.allSettled([...this.setups]);
    await Promise.all([...this.transfers.values()].map((t) => t.stop('server stopping')));
    this.cache.clear();
  }

  private onRequest(packet: Buffer, from: RemoteInfo): void {
    if (this.closed) return;
    const client = peerLabel(from);
    let request: TftpRequest;
    try {
      request = parseRequest(packet);
    } catch (err) {
      const error = asProtocolError(err);
      this.refuse(from, error.code, error.message, `${client} (malformed request)`);
      return;
    }
    const what = `${client} ${request.opcode === OP.WRQ ? 'WRQ' : 'RRQ'} "${printable(request.filename)}"`;
    if (request.opcode === OP.WRQ) {
      this.refuse(
        from,
        ERR.accessViolation,
        'access violation: write requests are refused, this TFTP server is read-only',
        what,
      );
      return;
    }
    const key = `${from.address}|${from.port}`;
    const existing = this.transfers.get(key);
    if (existing && existing.filename === request.filename && existing.answerRepeatedRequest()) {
      return;
    }
    if (this.starting.has(key)) return; // The same request again while we open the file.
    if (this.reserved >= this.settings.maxTransfers) {
      this.refuse(
        from,
        ERR.notDefined,
        `server busy: ${this.reserved} transfers in progress, try again`,
        what,
      );
      return;
    }
    // The client restarted from the same port: its old transfer is dead.
    if (existing) void existing.stop(null);
    this.reserved++;
    this.starting.add(key);
    const setup = this.startTransfer(request, from, key, what).finally(() => {
      this.starting.delete(key);
      this.setups.delete(setup);
    });
    this.setups.add(setup);
  }

  private async startTransfer(
    request: TftpRequest,
    from: RemoteInfo,
    key: string,
    what: string,
  ): Promise<void> {
    let source: BlockSource | undefined;
    let socket: Socket | undefined;
    try {
      const file = await resolveInRoot(this.settings.rootReal, request.filename);
      source = await this.cache.source(file, request.mode);
      const negotiated = negotiate(request, source, this.settings);
      socket = openSocket(this.settings.type);
      await new Promise<void>((resolve, reject) => {
        socket!.once('error', reject);
        socket!.bind({ port: 0, address: this.settings.host, exclusive: true }, () => {
          socket!.off('error', reject);
          resolve();
        });
      });
      if (this.closed) throw new TftpProtocolError(ERR.notDefined, 'server stopping');
      const transfer = new Transfer(
        this.settings,
        socket,
        from,
        request,
        source,
        negotiated,
        what,
        () => {
          if (this.transfers.get(key) === transfer) this.transfers.delete(key);
          this.reserved--;
        },
      );
      this.transfers.set(key, transfer);
      transfer.begin();
    } catch (err) {
      source?.close();
      socket?.close();
      this.reserved--;
      const error = asProtocolError(err);
      if (!this.closed) this.refuse(from, error.code, error.message, what);
    }
  }

  private refuse(to: RemoteInfo, code: TftpErrorCode, message: string, what: string): void {
    if (!this.closed) this.socket.send(encodeError(code, message), to.port, to.address);
    this.settings.log(`tftp: ${what} refused: ERROR ${code} ${message}`);
  }
}

interface Negotiated {
  blksize: number;
  windowsize: number;
  /** The client's `timeout` option, in ms, when it sent one. */
  timeoutMs: number | undefined;
  /** Options acknowledged, in the client's order; empty: no OACK, DATA 1 starts the transfer. */
  acknowledged: Array<[string, string]>;
}

function negotiate(request: TftpRequest, source: BlockSource, settings: Settings): Negotiated {
  const result: Negotiated = {
    blksize: DEFAULT_BLKSIZE,
    windowsize: 1,
    timeoutMs: undefined,
    acknowledged: [],
  };
  const seen = new Set<string>();
  const refuse = (message: string) =>
    new TftpProtocolError(ERR.optionRefused, `option refused: ${message}`);
  for (const [name, value] of request.options) {
    if (seen.has(name)) continue; // The first occurrence of an option counts.
    seen.add(name);
    const n = /^\d{1,10}$/.test(value) ? Number(value) : NaN;
    switch (name) {
      case 'blksize':
        if (!(n >= 8)) throw refuse(`blksize "${printable(value)}" (valid: 8..${MAX_BLKSIZE})`);
        result.blksize = Math.min(n, settings.maxBlksize);
        result.acknowledged.push([name, String(result.blksize)]);
        break;
      case 'windowsize':
        if (!(n >= 1 && n <= 65535)) {
          throw refuse(`windowsize "${printable(value)}" (valid: 1..65535)`);
        }
        result.windowsize = Math.min(n, settings.maxWindowsize);
        result.acknowledged.push([name, String(result.windowsize)]);
        break;
      case 'timeout':
        if (!(n >= 1 && n <= 255)) throw refuse(`timeout "${printable(value)}" (valid: 1..255 s)`);
        result.timeoutMs = n * 1000;
        result.acknowledged.push([name, String(n)]);
        break;
      case 'tsize':
        if (Number.isNaN(n)) throw refuse(`tsize "${printable(value)}" is not a number`);
        // A size unknown before sending (netascii of a large file) is not acknowledged.
        if (source.size !== undefined) result.acknowledged.push([name, String(source.size)]);
        break;
      default:
        break; // RFC 2347: options the server does not know are left out of the OACK.
    }
  }
  return result;
}

type Phase = 'oack' | 'data' | 'done';

class Transfer {
  readonly filename: string;
  private readonly settings: Settings;
  private readonly socket: Socket;
  private readonly peerAddress: string;
  private readonly peerPort: number;
  private readonly mode: string;
  private readonly source: BlockSource;
  private readonly blksize: number;
  private readonly windowsize: number;
  private readonly acknowledged: Array<[string, string]>;
  private readonly what: string;
  private readonly onEnd: () => void;
  private readonly startedAt = performance.now();
  private readonly rtoCeiling: number;

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
  private closedPromise: Promise<void> | undefined;

  constructor(
    settings: Settings,
    socket: Socket,
    from: RemoteInfo,
    request: TftpRequest,
    source: BlockSource,
    negotiated: Negotiated,
    what: string,
    onEnd: () => void,
  ) {
    this.settings = settings;
    this.socket = socket;
    this.peerAddress = from.address;
    this.peerPort = from.port;
    this.filename = request.filename;
    this.mode = request.mode;
    this.source = source;
    this.blksize = negotiated.blksize;
    this.windowsize = negotiated.windowsize;
    this.acknowledged = negotiated.acknowledged;
    this.what = what;
    this.onEnd = onEnd;
    this.rtoCeiling = negotiated.timeoutMs ?? settings.retransmitMs;
    this.rto = this.rtoCeiling;
    this.phase = negotiated.acknowledged.length > 0 ? 'oack' : 'data';
    if (source.size !== undefined) this.lastBlock = Math.floor(source.size / this.blksize) + 1;
    socket.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
    socket.on('error', () => {}); // ICMP errors for a vanished client: the timer ends it.
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
    this.socket.send(encodeOack(this.acknowledged), this.peerPort, this.peerAddress);
    this.sentAt = performance.now();
    this.sampleValid = !retransmission;
    this.armTimer();
  }

  /** Sends blocks first.. up to a window; reads first when a chunked source needs it. */
  private sendWindow(first: number, retransmission: boolean): void {
    this.nextStart = first;
    if (this.loading) return; // The read in progress sends from nextStart when it completes.
    const count =
      this.lastBlock === undefined
        ? this.windowsize
        : Math.min(this.windowsize, this.lastBlock - first + 1);
    const offset = (first - 1) * this.blksize;
    let pending: Promise<void> | undefined;
    try {
      pending = this.source.ensure(offset, count * this.blksize);
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
    const headers = Buffer.allocUnsafe(4 * count);
    let block = first;
    for (let j = 0; j < count; j++, block++) {
      const data = this.source.view(offset + j * this.blksize, this.blksize);
      const header = headers.subarray(4 * j, 4 * j + 4);
      header.writeUInt16BE(OP.DATA, 0);
      header.writeUInt16BE(block & 0xffff, 2);
      this.socket.send(data.length > 0 ? [header, data] : header, this.peerPort, this.peerAddress);
      if (data.length < this.blksize) {
        this.lastBlock = block;
        this.lastBlockBytes = data.length;
        break;
      }
    }
    this.windowEnd = Math.min(block, this.lastBlock ?? block);
    this.sentAt = performance.now();
    this.sampleValid = !retransmission;
    this.armTimer();
  }

  private onMessage(msg: Buffer, from: RemoteInfo): void {
    if (this.phase === 'done') return;
    if (from.port !== this.peerPort || from.address !== this.peerAddress) {
      // RFC 1350: answer a stranger with ERROR 5 and carry on.
      this.socket.send(encodeError(ERR.unknownTid, 'unknown transfer ID'), from.port, from.address);
      return;
    }
    const op = msg.length >= 4 ? msg.readUInt16BE(0) : 0;
    if (op === OP.ACK) {
      this.onAck(msg.readUInt16BE(2));
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
    if (this.srtt !== undefined) {
      this.rto = Math.min(
        Math.max(this.srtt + Math.max(4 * this.rttvar, 10), this.settings.minRetransmitMs),
        this.rtoCeiling,
      );
    }
  }

  /** One timer per transfer: moving the deadline later never touches the timer itself. */
  private armTimer(): void {
    this.deadline = performance.now() + this.rto;
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
    this.socket.send(encodeError(code, message), this.peerPort, this.peerAddress);
    this.finish(`failed: ${message}`);
  }

  /** Ends the transfer; `reason` null ends it without an ERROR packet or log line. */
  stop(reason: string | null): Promise<void> {
    if (reason !== null) this.fail(ERR.notDefined, reason);
    else this.finish(null);
    return this.closedPromise ?? Promise.resolve();
  }

  private finish(outcome: string | null): void {
    if (this.phase === 'done') return;
    this.phase = 'done';
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.source.close();
    this.closedPromise = new Promise((resolve) => this.socket.close(() => resolve()));
    this.onEnd();
    if (outcome === null) return;
    const bytes =
      outcome === 'ok'
        ? (this.lastBlock! - 1) * this.blksize + this.lastBlockBytes
        : Math.min(this.acked * this.blksize, this.source.size ?? Infinity);
    const options =
      this.acknowledged.length > 0
        ? this.acknowledged.map(([k, v]) => `${k}=${v}`).join(' ')
        : 'no options';
    const ms = Math.round(performance.now() - this.startedAt);
    this.settings.log(
      `tftp: ${this.what} ${this.mode} ${bytes} bytes [${options}] ${outcome} in ${ms} ms`,
    );
  }
}

function asProtocolError(err: unknown): TftpProtocolError {
  if (err instanceof TftpProtocolError) return err;
  return new TftpProtocolError(ERR.notDefined, (err as Error).message ?? String(err));
}

function peerLabel(from: RemoteInfo): string {
  return from.family === 'IPv6' ? `[${from.address}]:${from.port}` : `${from.address}:${from.port}`;
}

/** File names and option values come from the network: show them without control bytes. */
function printable(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, '?');
}
