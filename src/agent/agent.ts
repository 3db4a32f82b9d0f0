/**
 * The server-driven agent (`bty --server URL --mac MAC`): what runs on tty1 of the PXE-booted
 * live environment. It reports the disks, asks bty-web what to do and does it without prompts:
 *
 *   inventory POST -> plan GET -> flash | inventory (reboot) | exit | the wizard
 *
 * Unlike upstream, a failed auto-flash is reported to the server at once and ends the agent
 * with the error's exit code; it never falls back to the wizard (which would leave an
 * unattended machine waiting for a keypress before the server hears of the failure).
 */
import { asBtyError, BtyError, EXIT, type ExitCode } from '../core/errors.ts';
import type { FlashProgress } from '../core/progress.ts';
import { matchDiskBySerial, type Disk } from '../flash/disks.ts';
import { flash } from '../flash/engine.ts';
import { formatBytes } from '../cli/output.ts';
import { ProgressView } from '../cli/progress-view.ts';
import { MARKER_AUTO_FLASH_STARTING, MARKER_FLASH_COMPLETE, emitMarker } from './console.ts';
import {
  agentDisks,
  describeDisks,
  inventoryRecord,
  INVENTORY_MAX_DISKS,
  readLshw,
} from './disks.ts';
import { ProgressReporter } from './progress-reporter.ts';
import type { RebootAction } from './reboot.ts';
import { PlanError, REASON_MAX_CHARS, ServerApi, type AgentPlan } from './server-api.ts';
import { runWizardFallback, type WizardFallback } from './wizard-fallback.ts';

export interface AgentOptions {
  /** Base URL, normalised (settings.ts). */
  server: string;
  /** Canonical MAC. */
  mac: string;
  /** How to reboot; null for `--no-reboot`. */
  reboot: RebootAction | null;
  out: (text: string) => void;
  err: (text: string) => void;
  /** Progress is drawn as a redrawn line on a terminal, as occasional lines otherwise. */
  isTTY?: boolean;
  /** Where console markers are echoed besides stdout; null for nowhere. */
  consolePath: string | null;
  /** Loop devices become targets with a made-up serial (disks.ts, tests only). */
  loopIdentity: boolean;
  /** The `lshw` program to run for the inventory (tests point it elsewhere). */
  lshwProgram?: string;
  /** The hand-over to the wizard (tests observe it). */
  wizard?: WizardFallback;
  /** Cancels a running flash (SIGINT/SIGTERM); the failure is reported to the server. */
  signal?: AbortSignal;
  /** Told when the engine starts and stops writing (outside it, a signal may just exit). */
  onFlashing?: (active: boolean) => void;
  progressIntervalMs?: number;
}

/** Status POSTs are retried: a lost `done` makes the server flash the machine again. */
const STATUS_ATTEMPTS = 3;
const STATUS_RETRY_DELAY_MS = 2000;

export async function runAgent(options: AgentOptions): Promise<ExitCode> {
  const api = new ServerApi(options.server, options.mac);
  const say = (line: string) => options.out(`${line}\n`);
  say(`bty: server-driven mode: server=${api.base} mac=${api.mac}`);

  const inventoryPosted = await postInventory(api, options);

  let plan: AgentPlan;
  try {
    plan = await api.getPlan();
  } catch (err) {
    if (!(err instanceof PlanError)) throw err;
    return handOver(options, api.catalogUrl, err.message);
  }

  switch (plan.mode) {
    case 'flash':
      return autoFlash(api, plan, options);
    case 'inventory':
      say('bty: plan: inventory + reboot');
      // A failed first attempt gets one more: reporting the disks is this boot's whole job.
      if (!inventoryPosted && !(await postInventory(api, options))) {
        say('bty: the inventory could not be posted; rebooting anyway');
      }
      return rebootAndExit(options);
    case 'exit':
      say(
        'bty: plan: nothing to do (the server boots this machine from its firmware or local ' +
          'disk); exiting',
      );
      return EXIT.ok;
    case 'interactive':
      return handOver(options, plan.catalog ?? api.catalogUrl, null);
    case 'unknown':
      return handOver(
        options,
        api.catalogUrl,
        `unknown plan mode '${plan.value}'; falling back to interactive`,
      );
  }
}

function handOver(
  options: AgentOptions,
  catalog: string,
  banner: string | null,
): Promise<ExitCode> {
  const wizard = options.wizard ?? runWizardFallback;
  return wizard({ catalog, banner, out: options.out, noReboot: options.reboot === null });
}

/** Posts the disks (and lshw when it can be had); true when the server stored them. */
async function postInventory(api: ServerApi, options: AgentOptions): Promise<boolean> {
  const say = (line: string) => options.out(`${line}\n`);
  let disks: Disk[];
  try {
    disks = await agentDisks({ loopIdentity: options.loopIdentity });
  } catch (err) {
    say(`bty: lsblk failed; no inventory to post: ${asBtyError(err).message}`);
    return false;
  }
  const lshw = await readLshw(options.lshwProgram);
  const body = {
    disks: disks.slice(0, INVENTORY_MAX_DISKS).map(inventoryRecord),
    ...(lshw === null ? {} : { lshw }),
  };
  const where = api.url('/inventory');
  try {
    const status = await api.post('/inventory', body);
    if (status >= 200 && status < 300) {
      say(
        `bty: posted inventory -- ${body.disks.length} disk(s), ` +
          `${lshw === null ? 'no lshw' : '+ lshw'} -> ${api.base}`,
      );
      return true;
    }
    say(`bty: inventory POST to ${where} FAILED: the server answered HTTP ${status}`);
  } catch (err) {
    say(`bty: inventory POST to ${where} FAILED: ${(err as Error).message}`);
  }
  return false;
}

async function autoFlash(
  api: ServerApi,
  plan: Extract<AgentPlan, { mode: 'flash' }>,
  options: AgentOptions,
): Promise<ExitCode> {
  const say = (line: string) => options.out(`${line}\n`);
  emitMarker(MARKER_AUTO_FLASH_STARTING, options.out, options.consolePath);
  const serial = plan.target_disk_serial;
  say(`bty: plan: flash ${plan.name ?? plan.image} onto the disk with serial '${serial}'`);
  say(`bty:   image ${plan.image}`);

  let disks: Disk[];
  try {
    disks = await agentDisks({ loopIdentity: options.loopIdentity });
  } catch (err) {
    const e = asBtyError(err);
    return reportFailure(api, options, e, `disk inventory failed: ${e.message}`);
  }
  const disk = matchDiskBySerial(disks, serial);
  if (disk === null) {
    const current = describeDisks(disks);
    options.err(
      `bty: no disk on this host has serial '${serial}'. Current disks: ${current}\n` +
        'bty: the server-side pick is stale or wrong: fix the target disk of this machine in ' +
        'bty-web (/ui/machines). Nothing was written.\n',
    );
    const refusal = new BtyError(
      'BTY_ERR_TARGET_NOT_FOUND',
      `target disk serial '${serial}' not present on this host; current disks: ${current}`,
      { hint: 'Pick one of the current disks for this machine in bty-web.' },
    );
    // Refused for safety: the server named a disk this machine does not have.
    return reportFailure(api, options, refusal, refusal.message, EXIT.refused);
  }
  say(
    `bty: target ${disk.path} (${formatBytes(disk.size_bytes)}` +
      `${disk.model ? `, ${disk.model}` : ''}, serial '${disk.serial ?? ''}')`,
  );

  const view = new ProgressView(options.err, Boolean(options.isTTY));
  const reporter = new ProgressReporter((event) => api.postProgress(event), {
    ...(options.progressIntervalMs !== undefined ? { intervalMs: options.progressIntervalMs } : {}),
    onFirstFailure: (why) => {
      view.end();
      say(`bty: warning: progress report to ${api.url('/progress')} failed (${why}); flashing on`);
    },
  });
  options.onFlashing?.(true);
  try {
    const result = await flash({
      source: plan.image,
      target: disk.path,
      format: plan.format,
      sha256: plan.disk_image_sha,
      ...(options.signal ? { signal: options.signal } : {}),
      onProgress: (event: FlashProgress) => {
        reporter.report(event);
        view.update(event);
      },
    });
    view.end();
    say(
      `bty: flashed ${formatBytes(result.image_bytes)} onto ${disk.path} in ` +
        `${result.seconds.toFixed(1)} s; sha256 ` +
        (result.sha256_verified ? `verified (${result.sha256})` : 'not checked (no digest given)'),
    );
  } catch (err) {
    view.end();
    await reporter.flush();
    const e = asBtyError(err);
    options.err(`bty: error: ${e.message} [${e.code}]\nbty: hint: ${e.hint}\n`);
    return reportFailure(api, options, e, e.message);
  } finally {
    options.onFlashing?.(false);
  }
  // The status clears the server's progress record: no progress report may land after it.
  await reporter.flush();
  if (!(await postStatus(api, options, 'done'))) {
    say('bty: the server was not told the flash completed; it may offer to flash again');
  }
  emitMarker(MARKER_FLASH_COMPLETE, options.out, options.consolePath);
  return rebootAndExit(options);
}

/** Reports `failed` to the server and returns the exit code the failure carries. */
async function reportFailure(
  api: ServerApi,
  options: AgentOptions,
  error: BtyError,
  reason: string,
  exitCode: ExitCode = error.exitCode,
): Promise<ExitCode> {
  await postStatus(api, options, 'failed', reason.slice(0, REASON_MAX_CHARS));
  options.out(`bty: auto-flash failed; reported to the server. Exit code ${exitCode}.\n`);
  return exitCode;
}

async function postStatus(
  api: ServerApi,
  options: AgentOptions,
  status: 'done' | 'failed',
  reason?: string,
): Promise<boolean> {
  let why = '';
  for (let attempt = 1; attempt <= STATUS_ATTEMPTS; attempt++) {
    try {
      const code = await api.postStatus(status, reason);
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
    if (attempt < STATUS_ATTEMPTS) {
      await new Promise((r) => setTimeout(r, STATUS_RETRY_DELAY_MS));
    }
  }
  options.out(`bty: status POST to ${api.url('/status')} FAILED: ${why}\n`);
  return false;
}

async function rebootAndExit(options: AgentOptions): Promise<ExitCode> {
  if (options.reboot === null) {
    options.out('bty: --no-reboot given; not rebooting\n');
    return EXIT.ok;
  }
  try {
    await options.reboot();
    return EXIT.ok;
  } catch (err) {
    options.err(`bty: ${(err as Error).message}\n`);
    return EXIT.failure;
  }
}
