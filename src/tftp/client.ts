/**
 * A small TFTP read client (RFC 1350, options of RFC 2347/2348/2349/7440): for tests, benchmarks
 * and probes that need to see exactly what a server answers. It acknowledges each full window,
 * acknowledges the last in-order block at once when a block arrives out of order, and resends its
 * last packet when the server falls silent.
 */
import { createSocket, type RemoteInfo } from 'node:dgram';
import { isIP } from 'node:net';
import {
  encodeAck,
  encodeError,
  encodeRequest,
  ERR,
  fromNetascii,
  OP,
  parseError,
  parseOack,
  type TransferMode,
} from './packet.ts';

export interface TftpGetOptions {
  host: string;
  port: number;
  file: string;
  mode?: TransferMode;
  blksize?: number;
  windowsize?: number;
  /** Ask for the size (tsize 0); the answer is in `result.oack`. */
  tsize?: boolean;
  /** Sent as the `timeout` option, in seconds. */
  timeout?: number;
  /** More options, sent as given after the ones above. */
  extraOptions?: Array<[string, string]>;
  /** How long to wait for a packet before resending ours; default 1000 ms. */
  waitMs?: number;
  /** Resends before giving up; default 5. */
  retries?: number;
  /** netascii transfers: return the bytes as sent (CR LF) instead of converted back; default false. */
  rawNetascii?: boolean;
}

export interface TftpGetResult {
  data: Buffer;
  /** The server's option acknowledgement, or null when it sent DATA straight away. */
  oack: Map<string, string> | null;
  blocks: number;
  /** The server's transfer port (its TID). */
  serverPort: number;
}

/** The server answered with an ERROR packet (code set), or stopped answering (code undefined). */
export class TftpClientError extends Error {
  readonly code: number | undefined;
  constructor(message: string, code?: number) {
    super(message);
    this.name = 'TftpClientError';
    this.code = code;
  }
}

export function tftpGet(options: TftpGetOptions): Promise<TftpGetResult> {
  const mode = options.mode ?? 'octet';
  const requested: Array<[string, string]> = [];
  if (options.blksize !== undefined) requested.push(['blksize', String(options.blksize)]);
  if (options.tsize) requested.push(['tsize', '0']);
  if (options.timeout !== undefined) requested.push(['timeout', String(options.timeout)]);
  if (options.windowsize !== undefined) requested.push(['windowsize', String(options.windowsize)]);
  requested.push(...(options.extraOptions ?? []));
  const waitMs = options.waitMs ?? 1000;
  const maxRetries = options.retries ?? 5;

  return new Promise((resolve, reject) => {
    const socket = createSocket(isIP(options.host) === 6 ? 'udp6' : 'udp4');
    const chunks: Buffer[] = [];
    let blksize = 512;
    let windowsize = 1;
    let oack: Map<string, string> | null = null;
    let server: { address: string; port: number } | undefined;
    let received = 0; // Blocks received in order (absolute).
    let inWindow = 0; // Blocks received since the last ACK we sent.
    let lastSent = encodeRequest(OP.RRQ, options.file, mode, requested);
    let retries = 0;
    let timer: NodeJS.Timeout | undefined;
    let settled = false;

    const send = (packet: Buffer) => {
      lastSent = packet;
      socket.send(packet, server?.port ?? options.port, server?.address ?? options.host);
      rearm();
    };
    const rearm = () => {
      if (timer !== undefined) clearTimeout(timer);
      timer = setTimeout(onTimeout, waitMs);
    };
    const onTimeout = () => {
      if (++retries > maxRetries) {
        end(
          new TftpClientError(
            `no answer from ${options.host}:${options.port} (${waitMs} ms × ${maxRetries + 1})`,
          ),
        );
        return;
      }
      send(lastSent);
    };
    const end = (outcome: TftpClientError | TftpGetResult) => {
      if (settled) return;
      settled = true;
      if (timer !== undefined) clearTimeout(timer);
      socket.close();
      if (outcome instanceof TftpClientError) reject(outcome);
      else resolve(outcome);
    };
    const finish = () => {
      let data: Buffer = Buffer.concat(chunks);
      if (mode === 'netascii' && !options.rawNetascii) data = fromNetascii(data);
      end({ data, oack, blocks: received, serverPort: server!.port });
    };

    socket.on('error', (err) => end(new TftpClientError(err.message)));
    socket.on('message', (msg: Buffer, from: RemoteInfo) => {
      if (settled) return;
      if (server === undefined) {
        server = { address: from.address, port: from.port };
      } else if (from.port !== server.port || from.address !== server.address) {
        socket.send(encodeError(ERR.unknownTid, 'unknown transfer ID'), from.port, from.address);
        return;
      }
      const op = msg.length >= 2 ? msg.readUInt16BE(0) : 0;
      if (op === OP.ERROR) {
        const { code, message } = parseError(msg);
        end(new TftpClientError(`server sent ERROR ${code}: ${message}`, code));
        return;
      }
      if (op === OP.OACK && received === 0 && oack === null) {
        oack = parseOack(msg);
        blksize = Number(oack.get('blksize') ?? 512);
        windowsize = Number(oack.get('windowsize') ?? 1);
        retries = 0;
        send(encodeAck(0));
        return;
      }
      if (op !== OP.DATA || msg.length < 4) return;
      const wire = msg.readUInt16BE(2);
      if (wire !== ((received + 1) & 0xffff)) {
        // Out of order or a repeat: say at once what we hold (RFC 7440), once per window.
        if (inWindow > 0 || wire === (received & 0xffff)) {
          inWindow = 0;
          send(encodeAck(received));
        }
        return;
      }
      received++;
      inWindow++;
      retries = 0;
      const data = msg.subarray(4);
      chunks.push(data);
      if (data.length < blksize) {
        // Close only once the final ACK is out, or the server never hears the transfer ended.
        if (timer !== undefined) clearTimeout(timer);
        socket.send(encodeAck(received), server.port, server.address, () => finish());
        return;
      }
      if (inWindow >= windowsize) {
        inWindow = 0;
        send(encodeAck(received));
      } else {
        rearm();
      }
    });
    socket.bind(0, () => send(lastSent));
  });
}
