/**
 * A read-only TFTP server: RFC 1350 reads (octet and netascii) with option negotiation (RFC 2347)
 * for blksize (RFC 2348), tsize and timeout (RFC 2349) and windowsize (RFC 7440).
 *
 * This thread owns the listening port: it parses each request, resolves the file (through the
 * shared cache) and negotiates the options, then hands the transfer to a TransferHost
 * (transfer.ts), which runs it on its own ephemeral UDP socket (its TID): this thread's own host,
 * or one on a worker thread (worker.ts), whichever has the fewest transfers in flight, so a lone
 * transfer stays here and a boot storm spreads over every core.
 */
import { type RemoteInfo, type Socket } from 'node:dgram';
import { realpath, stat } from 'node:fs/promises';
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { BtyError } from '../core/errors.ts';
import { FileCache, resolveInRoot } from './files.ts';
import {
  encodeError,
  ERR,
  OP,
  parseRequest,
  TftpProtocolError,
  type TftpErrorCode,
  type TftpRequest,
} from './packet.ts';
import {
  asProtocolError,
  openSocket,
  printable,
  sourceSize,
  TransferHost,
  type Negotiated,
  type TransferEvents,
  type TransferSettings,
  type TransferSpec,
} from './transfer.ts';
import type { FromWorker, ToWorker } from './worker-protocol.ts';

export interface TftpServerOptions {
  /** Folder served, read-only; nothing outside it is ever read. */
  root: string;
  /** Listen address; default 0.0.0.0 (an address with ':' listens on IPv6). */
  host?: string;
  /** UDP port; default 69. 0 picks a free port (see address()). */
  port?: number;
  /** Transfers in flight at once (a request beyond gets ERROR 0 "server busy"); default 2000. */
  maxTransfers?: number;
  /**
   * Transfers in flight from one client address; default 256. A PXE client fetches one file at a
   * time: without a cap, one host sending requests from many ports could take every slot (the
   * default leaves room for test rigs and relays that show many clients from one address).
   */
  maxPerClient?: number;
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
  /**
   * Worker threads running transfers next to this thread (which also keeps the listening port);
   * 0 runs every transfer on this thread. Default: one less than the CPUs.
   */
  workers?: number;
}

export interface TftpServer {
  address(): { address: string; port: number };
  readonly activeTransfers: number;
  close(): Promise<void>;
}

const MAX_BLKSIZE = 65464;
const DEFAULT_BLKSIZE = 512;
const MIN_RTO_MS = 50;

interface Settings extends TransferSettings {
  rootReal: string;
  maxTransfers: number;
  maxPerClient: number;
  log: (line: string) => void;
  maxBlksize: number;
  maxWindowsize: number;
}

/**
 * Workers when the caller does not say: one per CPU besides this thread's (which runs transfers
 * too), so a boot storm keeps every core busy; none on a single CPU. More threads than cores
 * measured slower (docs/tftp.md, "Threads").
 */
export function defaultWorkers(): number {
  return availableParallelism() - 1;
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
    maxPerClient: Math.max(options.maxPerClient ?? 256, 1),
    log: options.log ?? (() => {}),
    maxBlksize: Math.min(Math.max(options.maxBlksize ?? MAX_BLKSIZE, 8), MAX_BLKSIZE),
    maxWindowsize: Math.min(Math.max(options.maxWindowsize ?? 64, 1), 65535),
    retransmitMs: Math.max(options.retransmitMs ?? 1000, 1),
    minRetransmitMs: Math.max(options.minRetransmitMs ?? MIN_RTO_MS, 1),
    maxRetries: Math.max(options.maxRetries ?? 10, 1),
  };
  const workers = Math.max(Math.floor(options.workers ?? defaultWorkers()), 0);
  const cache = new FileCache(options.cacheBytes ?? 128 * 1024 * 1024, { shared: workers > 0 });
  const server = new Server(settings, cache);
  try {
    await server.start(options.port ?? 69, workers);
  } catch (err) {
    await server.close();
    throw err;
  }
  return server;
}

/** The worker module next to this one, in the form this one runs as (.ts from source, .js built). */
const WORKER_URL = new URL(`./worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url);

interface WorkerSlot {
  worker: Worker;
  /** Transfers handed to it and not yet ended. */
  transfers: Set<number>;
  repeats: Map<number, (answered: boolean) => void>;
  closed: (() => void) | undefined;
  exited: Promise<void>;
  /** It answered `ready`: a worker that dies later is replaced, one that cannot start is not. */
  ready: boolean;
  stopping: boolean;
}

/**
 * Where transfers run: this thread and the worker threads. Each new transfer goes to the one with
 * the fewest in flight, this thread first on a tie: a lone transfer stays here (no thread hop, and
 * the scheduler keeps it next to its client's packets), a boot storm spreads over every thread.
 * A worker that dies (it should not) takes its transfers with it: they are reported as ended and
 * a new worker takes its place.
 */
class TransferPool {
  private readonly settings: TransferSettings;
  private readonly events: TransferEvents;
  private readonly log: (line: string) => void;
  private readonly local: TransferHost;
  /** Transfers running on this thread. */
  private readonly localIds = new Set<number>();
  private readonly slots: WorkerSlot[] = [];
  private readonly owner = new Map<number, WorkerSlot>();
  private closing = false;

  constructor(settings: TransferSettings, events: TransferEvents, log: (line: string) => void) {
    this.settings = settings;
    this.log = log;
    this.events = events;
    this.local = new TransferHost(settings, {
      ended: (id, line) => {
        this.localIds.delete(id);
        events.ended(id, line);
      },
      refused: (id, error) => {
        this.localIds.delete(id);
        events.refused(id, error);
      },
    });
  }

  get workers(): number {
    return this.slots.length;
  }

  async open(workers: number): Promise<void> {
    await Promise.all(Array.from({ length: workers }, () => this.spawn()));
  }

  private spawn(): Promise<void> {
    const worker = new Worker(WORKER_URL, { workerData: this.settings });
    const slot: WorkerSlot = {
      worker,
      transfers: new Set(),
      repeats: new Map(),
      closed: undefined,
      exited: new Promise((resolve) => worker.once('exit', () => resolve())),
      ready: false,
      stopping: false,
    };
    this.slots.push(slot);
    return new Promise<void>((resolve, reject) => {
      worker.on('message', (message: FromWorker) => {
        if (message.type === 'ready') {
          slot.ready = true;
          resolve();
        } else this.onMessage(slot, message);
      });
      worker.on('error', (err: Error) => {
        reject(err);
        this.log(`tftp: transfer worker failed: ${err.stack ?? err.message}`);
      });
      worker.once('exit', (code) => {
        reject(new Error(`TFTP transfer worker exited (code ${code}) while starting`));
        this.onExit(slot);
      });
    });
  }

  private onMessage(slot: WorkerSlot, message: FromWorker): void {
    switch (message.type) {
      case 'ended':
        slot.transfers.delete(message.id);
        this.owner.delete(message.id);
        this.events.ended(message.id, message.line);
        break;
      case 'refused':
        slot.transfers.delete(message.id);
        this.owner.delete(message.id);
        this.events.refused(message.id, new TftpProtocolError(message.code, message.message));
        break;
      case 'repeated':
        slot.repeats.get(message.id)?.(message.answered);
        slot.repeats.delete(message.id);
        break;
      case 'closed':
        slot.closed?.();
        break;
    }
  }

  private onExit(slot: WorkerSlot): void {
    const index = this.slots.indexOf(slot);
    if (index >= 0) this.slots.splice(index, 1);
    for (const resolve of slot.repeats.values()) resolve(false);
    for (const id of slot.transfers) {
      this.owner.delete(id);
      this.events.ended(id, null);
    }
    slot.transfers.clear();
    slot.closed?.();
    if (slot.ready && !slot.stopping && !this.closing) {
      this.spawn().catch((err: Error) =>
        this.log(`tftp: a new transfer worker failed to start: ${err.message}`),
      );
    }
  }

  start(id: number, spec: TransferSpec): void {
    let best: WorkerSlot | undefined;
    let fewest = this.localIds.size;
    for (const slot of this.slots) {
      if (slot.transfers.size < fewest) {
        best = slot;
        fewest = slot.transfers.size;
      }
    }
    if (best === undefined) {
      this.localIds.add(id);
      this.local.start(id, spec);
      return;
    }
    best.transfers.add(id);
    this.owner.set(id, best);
    best.worker.postMessage({ type: 'start', id, spec } satisfies ToWorker);
  }

  /** The client repeated its request; false: the transfer ended, the request starts anew. */
  repeat(id: number): Promise<boolean> {
    const slot = this.owner.get(id);
    if (slot === undefined) return Promise.resolve(this.local.repeat(id));
    return new Promise((resolve) => {
      slot.repeats.set(id, resolve);
      slot.worker.postMessage({ type: 'repeat', id } satisfies ToWorker);
    });
  }

  stop(id: number, reason: string | null): void {
    const slot = this.owner.get(id);
    if (slot) slot.worker.postMessage({ type: 'stop', id, reason } satisfies ToWorker);
    else this.local.stop(id, reason);
  }

  /** Ends every transfer (ERROR 0 `reason`), frees every socket and stops the workers. */
  async close(reason: string): Promise<void> {
    this.closing = true;
    await Promise.all([
      this.local.stopAll(reason),
      ...[...this.slots].map(async (slot) => {
        slot.stopping = true;
        await new Promise<void>((resolve) => {
          slot.closed = resolve;
          slot.worker.postMessage({ type: 'close', reason } satisfies ToWorker);
        });
        await slot.worker.terminate();
        await slot.exited;
      }),
    ]);
  }
}

interface Running {
  id: number;
  filename: string;
  /** A repeated request is being answered (its answer decides whether to start anew). */
  repeating: boolean;
}

class Server implements TftpServer {
  private readonly socket: Socket;
  private readonly settings: Settings;
  private readonly cache: FileCache;
  private pool: TransferPool | undefined;
  /** Transfers by client address and port (the client's TID). */
  private readonly transfers = new Map<string, Running>();
  /** The key and log-line start of every transfer handed to the pool, by id. */
  private readonly byId = new Map<number, { key: string; what: string; from: RemoteInfo }>();
  /** Transfers in flight (or starting) per client address. */
  private readonly perClient = new Map<string, number>();
  private readonly starting = new Set<string>();
  private readonly setups = new Set<Promise<void>>();
  private nextId = 1;
  private reserved = 0;
  private closed = false;

  constructor(settings: Settings, cache: FileCache) {
    this.settings = settings;
    this.cache = cache;
    this.socket = openSocket(settings.type);
  }

  async start(port: number, workers: number): Promise<void> {
    const events: TransferEvents = {
      ended: (id, line) => this.ended(id, line),
      refused: (id, error) => {
        const entry = this.ended(id, null);
        // While closing, a transfer still opening is cancelled: no client to tell.
        if (entry && !this.closed) this.refuse(entry.from, error.code, error.message, entry.what);
      },
    };
    const transferSettings: TransferSettings = {
      host: this.settings.host,
      type: this.settings.type,
      retransmitMs: this.settings.retransmitMs,
      minRetransmitMs: this.settings.minRetransmitMs,
      maxRetries: this.settings.maxRetries,
    };
    this.pool = new TransferPool(transferSettings, events, this.settings.log);
    await this.pool.open(workers);
    await this.listen(port);
  }

  private listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
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
    await new Promise<void>((resolve) => {
      try {
        this.socket.close(() => resolve());
      } catch {
        resolve(); // Never bound (start failed).
      }
    });
    await Promise.allSettled([...this.setups]);
    await this.pool?.close('server stopping');
    this.cache.clear();
  }

  /** Forgets a transfer that ended or could not start; returns what was known of it. */
  private ended(id: number, line: string | null) {
    const entry = this.byId.get(id);
    if (entry === undefined) return undefined;
    this.byId.delete(id);
    if (this.transfers.get(entry.key)?.id === id) this.transfers.delete(entry.key);
    this.release(entry.from.address);
    if (line !== null) this.settings.log(line);
    return entry;
  }

  /** Gives back one slot of `address` (and of the whole server). */
  private release(address: string): void {
    this.reserved--;
    const left = (this.perClient.get(address) ?? 1) - 1;
    if (left > 0) this.perClient.set(address, left);
    else this.perClient.delete(address);
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
    if (this.starting.has(key)) return; // The same request again while we open the file.
    const existing = this.transfers.get(key);
    if (existing && existing.filename === request.filename) {
      // Resent before our first packet reached the client: the running transfer answers it,
      // unless the client already acknowledged something (then it restarted: start anew).
      if (existing.repeating) return;
      existing.repeating = true;
      void this.pool!.repeat(existing.id).then((answered) => {
        existing.repeating = false;
        if (!answered) this.onRequest(packet, from);
      });
      return;
    }
    if (this.reserved >= this.settings.maxTransfers) {
      this.refuse(
        from,
        ERR.notDefined,
        `server busy: ${this.reserved} transfers in progress, try again`,
        what,
      );
      return;
    }
    const fromThere = this.perClient.get(from.address) ?? 0;
    if (fromThere >= this.settings.maxPerClient) {
      this.refuse(
        from,
        ERR.notDefined,
        `server busy: ${fromThere} transfers in progress for ${from.address}, try again`,
        what,
      );
      return;
    }
    // The client restarted from the same port with another file: its old transfer is dead.
    if (existing) {
      this.transfers.delete(key);
      this.pool!.stop(existing.id, null);
    }
    this.reserved++;
    this.perClient.set(from.address, fromThere + 1);
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
    let spec: TransferSpec;
    try {
      const file = await resolveInRoot(this.settings.rootReal, request.filename);
      const source = await this.cache.source(file, request.mode);
      spec = {
        peerAddress: from.address,
        peerPort: from.port,
        filename: request.filename,
        mode: request.mode,
        source,
        negotiated: negotiate(request, sourceSize(source), this.settings),
        what,
      };
      if (this.closed) throw new TftpProtocolError(ERR.notDefined, 'server stopping');
    } catch (err) {
      this.release(from.address);
      const error = asProtocolError(err);
      if (!this.closed) this.refuse(from, error.code, error.message, what);
      return;
    }
    const id = this.nextId++;
    this.byId.set(id, { key, what, from });
    this.transfers.set(key, { id, filename: request.filename, repeating: false });
    this.pool!.start(id, spec);
  }

  private refuse(to: RemoteInfo, code: TftpErrorCode, message: string, what: string): void {
    if (!this.closed) this.socket.send(encodeError(code, message), to.port, to.address);
    this.settings.log(`tftp: ${what} refused: ERROR ${code} ${message}`);
  }
}

function negotiate(request: TftpRequest, size: number | undefined, settings: Settings): Negotiated {
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
        if (size !== undefined) result.acknowledged.push([name, String(size)]);
        break;
      default:
        break; // RFC 2347: options the server does not know are left out of the OACK.
    }
  }
  return result;
}

function peerLabel(from: RemoteInfo): string {
  return from.family === 'IPv6' ? `[${from.address}]:${from.port}` : `${from.address}:${from.port}`;
}
