/**
 * `POST /pxe/{mac}/status` with retries, shared by the auto-flash and the wizard hand-over: a
 * lost `done` makes the server flash the machine again, a lost `failed` leaves it showing a
 * flash in progress.
 */
import { REASON_MAX_CHARS, type ServerApi } from './server-api.ts';

export const STATUS_ATTEMPTS = 3;
export const STATUS_RETRY_DELAY_MS = 2000;

export interface StatusOptions {
  out: (text: string) => void;
  attempts?: number;
  retryDelayMs?: number;
}

/** True when the server stored the status; failures are printed, never thrown. */
export async function sendStatus(
  api: ServerApi,
  status: 'done' | 'failed',
  reason: string | undefined,
  options: StatusOptions,
): Promise<boolean> {
  const attempts = options.attempts ?? STATUS_ATTEMPTS;
  const delayMs = options.retryDelayMs ?? STATUS_RETRY_DELAY_MS;
  const trimmed = reason === undefined ? undefined : reason.slice(0, REASON_MAX_CHARS);
  let why = '';
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      const code = await api.postStatus(status, trimmed);
      if (code >= 200 && code < 300) {
        options.out(`bty: reported status=${status} to ${api.base}\n`);
        return true;
      }
      why = `HTTP ${code}`;
      // 4xx: the server refuses this report; asking again changes nothing.
      if (code < 500) break;
    } catch (err) {
      why = (err as Error).message;
    }
    if (attempt < attempts) await new Promise((r) => setTimeout(r, delayMs));
  }
  options.out(`bty: status POST to ${api.url('/status')} FAILED: ${why}\n`);
  return false;
}
