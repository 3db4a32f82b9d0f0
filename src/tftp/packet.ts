/**
 * TFTP wire format (RFC 1350) with option extension packets (RFC 2347): opcodes, error codes,
 * request parsing and the few packets the server and client build.
 */

export const OP = { RRQ: 1, WRQ: 2, DATA: 3, ACK: 4, ERROR: 5, OACK: 6 } as const;

/** RFC 1350 error codes, plus 8 from RFC 2347. */
export const ERR = {
  notDefined: 0,
  fileNotFound: 1,
  accessViolation: 2,
  diskFull: 3,
  illegalOperation: 4,
  unknownTid: 5,
  fileExists: 6,
  noSuchUser: 7,
  optionRefused: 8,
} as const;
export type TftpErrorCode = (typeof ERR)[keyof typeof ERR];

export type TransferMode = 'octet' | 'netascii';

export interface TftpRequest {
  opcode: typeof OP.RRQ | typeof OP.WRQ;
  /** The name exactly as sent (bytes read as latin1, so every byte maps to one char). */
  filename: string;
  mode: TransferMode;
  /** Options in the order the client sent them; names lower-cased (RFC 2347: case-insensitive). */
  options: Array<[name: string, value: string]>;
}

/** A packet the server must answer with an ERROR instead of serving it. */
export class TftpProtocolError extends Error {
  readonly code: TftpErrorCode;
  constructor(code: TftpErrorCode, message: string) {
    super(message);
    this.name = 'TftpProtocolError';
    this.code = code;
  }
}

/**
 * Parses a RRQ or WRQ. Malformed packets throw TftpProtocolError(4). Trailing NUL padding (some
 * PXE ROMs pad their requests) and an option name without a value are ignored, as RFC 2347
 * servers ignore what they do not understand.
 */
export function parseRequest(packet: Buffer): TftpRequest {
  if (packet.length < 4) throw illegal('request shorter than 4 bytes');
  const opcode = packet.readUInt16BE(0);
  if (opcode !== OP.RRQ && opcode !== OP.WRQ) {
    throw illegal(`opcode ${opcode} is not a request (RRQ or WRQ)`);
  }
  const strings: string[] = [];
  let start = 2;
  while (start < packet.length) {
    const end = packet.indexOf(0, start);
    if (end < 0) throw illegal('request field not terminated by NUL');
    strings.push(packet.toString('latin1', start, end));
    start = end + 1;
  }
  const [filename, rawMode, ...rest] = strings;
  if (filename === undefined || rawMode === undefined) {
    throw illegal('request lacks a file name or a mode');
  }
  if (filename === '') throw illegal('empty file name');
  const lowered = rawMode.toLowerCase();
  if (lowered !== 'octet' && lowered !== 'netascii') {
    throw illegal(`transfer mode "${rawMode}" is not supported (octet or netascii)`);
  }
  const options: Array<[string, string]> = [];
  for (let i = 0; i + 1 < rest.length; i += 2) {
    const name = rest[i]!;
    if (name === '') continue;
    options.push([name.toLowerCase(), rest[i + 1]!]);
  }
  return { opcode, filename, mode: lowered, options };
}

function illegal(message: string): TftpProtocolError {
  return new TftpProtocolError(ERR.illegalOperation, `illegal TFTP operation: ${message}`);
}

export function encodeRequest(
  opcode: typeof OP.RRQ | typeof OP.WRQ,
  filename: string,
  mode: TransferMode,
  options: Array<[string, string]> = [],
): Buffer {
  const fields = [filename, mode, ...options.flat()].map((f) => `${f}\0`).join('');
  const packet = Buffer.allocUnsafe(2 + Buffer.byteLength(fields, 'latin1'));
  packet.writeUInt16BE(opcode, 0);
  packet.write(fields, 2, 'latin1');
  return packet;
}

export function encodeError(code: TftpErrorCode, message: string): Buffer {
  // RFC 1350 messages are netascii; keep them short and printable.
  const text = message.replace(/[^\x20-\x7e]/g, '?').slice(0, 400);
  const packet = Buffer.alloc(5 + Buffer.byteLength(text, 'latin1'));
  packet.writeUInt16BE(OP.ERROR, 0);
  packet.writeUInt16BE(code, 2);
  packet.write(text, 4, 'latin1');
  return packet;
}

export function encodeOack(options: Array<[string, string]>): Buffer {
  const fields = options
    .flat()
    .map((f) => `${f}\0`)
    .join('');
  const packet = Buffer.allocUnsafe(2 + Buffer.byteLength(fields, 'latin1'));
  packet.writeUInt16BE(OP.OACK, 0);
  packet.write(fields, 2, 'latin1');
  return packet;
}

export function encodeAck(block: number): Buffer {
  const packet = Buffer.allocUnsafe(4);
  packet.writeUInt16BE(OP.ACK, 0);
  packet.writeUInt16BE(block & 0xffff, 2);
  return packet;
}

/** Reads an OACK's name/value pairs (names lower-cased). */
export function parseOack(packet: Buffer): Map<string, string> {
  const options = new Map<string, string>();
  const strings = packet.toString('latin1', 2).split('\0');
  for (let i = 0; i + 1 < strings.length; i += 2) {
    if (strings[i] !== '') options.set(strings[i]!.toLowerCase(), strings[i + 1]!);
  }
  return options;
}

export function parseError(packet: Buffer): { code: number; message: string } {
  const code = packet.length >= 4 ? packet.readUInt16BE(2) : 0;
  const end = packet.indexOf(0, 4);
  return { code, message: packet.toString('latin1', 4, end < 0 ? packet.length : end) };
}

/**
 * Netascii (RFC 764 as TFTP uses it): LF becomes CR LF and a bare CR becomes CR NUL. Every input
 * byte maps to one or two output bytes, so chunks convert independently.
 */
export function toNetascii(input: Buffer): Buffer {
  let extra = 0;
  for (let i = 0; i < input.length; i++) {
    const b = input[i];
    if (b === 0x0a || b === 0x0d) extra++;
  }
  if (extra === 0) return input;
  const out = Buffer.allocUnsafe(input.length + extra);
  let o = 0;
  let runStart = 0;
  for (let i = 0; i < input.length; i++) {
    const b = input[i];
    if (b === 0x0a) {
      o += input.copy(out, o, runStart, i);
      out[o++] = 0x0d;
      out[o++] = 0x0a;
      runStart = i + 1;
    } else if (b === 0x0d) {
      o += input.copy(out, o, runStart, i);
      out[o++] = 0x0d;
      out[o++] = 0x00;
      runStart = i + 1;
    }
  }
  input.copy(out, o, runStart);
  return out;
}

/** The inverse of toNetascii for a whole transfer: CR LF → LF, CR NUL → CR. */
export function fromNetascii(input: Buffer): Buffer {
  const out = Buffer.allocUnsafe(input.length);
  let o = 0;
  for (let i = 0; i < input.length; i++) {
    const b = input[i]!;
    if (b === 0x0d && i + 1 < input.length) {
      const next = input[i + 1];
      if (next === 0x0a) {
        out[o++] = 0x0a;
        i++;
        continue;
      }
      if (next === 0x00) {
        out[o++] = 0x0d;
        i++;
        continue;
      }
    }
    out[o++] = b;
  }
  return out.subarray(0, o);
}
