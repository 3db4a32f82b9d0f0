/** The messages between the TFTP server's thread and its transfer workers (src/tftp/worker.ts). */
import type { TftpErrorCode } from './packet.ts';
import type { TransferSpec } from './transfer.ts';

export type ToWorker =
  | { type: 'start'; id: number; spec: TransferSpec }
  /** The client repeated its request; answered with `repeated`. */
  | { type: 'repeat'; id: number }
  /** End one transfer: ERROR 0 `reason`, or silently when null. */
  | { type: 'stop'; id: number; reason: string | null }
  /** End every transfer (ERROR 0 `reason`); answered with `closed` once all sockets are shut. */
  | { type: 'close'; reason: string };

export type FromWorker =
  | { type: 'ready' }
  /** A transfer ended; `line` is its log line (null: ended silently). */
  | { type: 'ended'; id: number; line: string | null }
  /** A transfer could not start (its file or socket); the server answers the client. */
  | { type: 'refused'; id: number; code: TftpErrorCode; message: string }
  /** false: the transfer was past its first packet and has ended; the request starts anew. */
  | { type: 'repeated'; id: number; answered: boolean }
  | { type: 'closed' };
