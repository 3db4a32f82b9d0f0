/**
 * The server-driven agent (`bty --server URL --mac MAC`): what runs on tty1 of the PXE-booted
 * live environment. It reports the disks, asks bty-web what to do and does it without prompts:
 *
 *   inventory POST -> plan GET -> flash | inventory (reboot) | exit | the wizard
 *
 * Unlike upstream, a failed auto-flash is reported to the server at once and ends the agent
 * with the error's exit code; it never falls back to the wizard (which would leave an
 * unattended machine waiting for a keypress before the server hears of the failure).
 *
 * One agent runs at a time (lock.ts); a second `bty` on another console gets the wizard.
 */
import { asBtyError, BtyError, EXIT, type ExitCode } from '../core/errors.ts';
import type { FlashProgress } from '../core/progress.ts';
import type { Disk } from '../flash/disks.ts';
import { flash } from '../flash/engine.ts';
import type { FlashPlan } from '../flash/plan.ts';
import { formatBytes } from '../cli/output.ts';
import { ProgressView } from '../cli/progress-view.ts';
import {
  MARKER_AUTO_FLASH_STARTING,
  MARKER_FLASH_COMPLETE,
  emitMarker,
  markerEntered,
  markerExiting,
  type MarkerSinks,
} from './console.ts';
import {
  agentDisks,
  describeDisks,
  disksWithSerial,
  inventoryRecord,
  INVENTORY_MAX_DISKS,
  readLshw,
} from './disks.ts';
import { ProgressReporter } from './progress-reporter.ts';
import { acquireAgentLock } from './lock.ts';
import type { RebootAction } from './reboot.ts';
import { PlanError, REASON_MAX_CHARS, ServerApi, type AgentPlan } from './server-api.ts';
import { sendStatus } from './status.ts';
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
  /** The kernel log the markers also go to (`/dev/kmsg`); absent or null for nowhere. */
  kmsgPath?: string | null;
  /** The single-instance lock file (lock.ts); absent: no lock (tests that do not need one). */
  lockPath?: string;
  /** Every block device, instead of running lsblk (tests). */
  listDisks?: () => Promise<Disk[]>;
  /** Waits between plan GET attempts (network errors, 5xx); its length + 1 is the attempts. */
  planRetryDelaysMs?: readonly number[];
  /** Wait between status POST attempts. */
  statusRetryDelayMs?: number;
  /** Loop devices become targets with a made-up serial (disks.ts, tests only). */
  loopIdentity: boolean;
  /** The `lshw` program to run for the inventory (tests point it elsewhere). */
  lshwProgram?: string;
  /** The hand-over to the wizard (tests observe it). */
  wizard?: WizardFallback;
  /** Cancels a running flash (SIGINT/SIGTERM); the failure is reported to the server. */
  signal?: AbortSignal;
  /**
   * Told when the agent becomes busy and idle: `flashing` while the engine runs (a signal
   * cancels it), `reporting` while the outcome is posted (a signal waits for the POST: a lost
   * `done` makes the server flash again), null when a signal may simply exit.
   */
  onBusy?: (state: 'flashing' | 'reporting' | null) => void;
  progressIntervalMs?: number;
}

/**
 * Plan GET retries: 4 attempts over about 20 s (plus each attempt's own timeout), enough for a
 * bty-web restart or a slow switch port, short enough that an operator is not kept waiting.
 */
export const PLAN_RETRY_DELAYS_MS = [2000, 6000, 12000] as const;

function sinks(options: AgentOptions): MarkerSinks {
  return { consolePath: options.consolePath, kmsgPath: options.kmsgPath ?? null };
}

export async function runAgent(options: AgentOptions): Promise<ExitCode> {
  emitMarker(markerEntered(), options.out, sinks(options));
  try {
    return await runLocked(options);
  } finally {
    emitMarker(markerExiting(), options.out, sinks(options));
  }
}

async function runLocked(options: AgentOptions): Promise<ExitCode> {
  const api = new ServerApi(options.server, options.mac);
  if (options.lockPath === undefined) return runUnlocked(api, options);
  const lock = acquireAgentLock(options.lockPath);
  if (!lock.ok) {
    options.out(`bty: another bty agent is running (pid ${lock.holder}); not auto-flashing\n`);
    // Not reported to the server: the running agent owns this machine's status.
    const wizard = options.wizard ?? runWizardFallback;
    return wizard({
      catalog: api.catalogUrl,
      banner: `another bty agent is running (pid ${lock.holder}); starting the wizard`,
      out: options.out,
      noReboot: options.reboot === null,
    });
  }
  try {
    return await runUnlocked(api, options);
  } finally {
    lock.release();
  }
}

async function runUnlocked(api: ServerApi, options: AgentOptions): Promise<ExitCode> {
  const say = (line: string) => options.out(`${line}\n`);
  say(`bty: server-driven mode: server=${api.base} mac=${api.mac}`);

  const inventoryPosted = await postInventory(api, options);

  let plan: AgentPlan;
  try {
    plan = await getPlanWithRetries(api, options);
  } catch (err) {
    if (!(err instanceof PlanError)) throw err;
    return handOver(api, options, api.catalogUrl, err.message);
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
      return handOver(api, options, plan.catalog ?? api.catalogUrl, null);
    case 'unknown':
      return handOver(
        api,
        options,
        api.catalogUrl,
        `unknown plan mode '${plan.value}'; falling back to interactive`,
      );
  }
}

async function getPlanWithRetries(api: ServerApi, options: AgentOptions): Promise<AgentPlan> {
  const delays = options.planRetryDelaysMs ?? PLAN_RETRY_DELAYS_MS;
  for (let attempt = 0; ; attempt++) {
    try {
      return await api.getPlan();
    } catch (err) {
      const delay = delays[attempt];
      if (!(err instanceof PlanError) || !err.retryable || delay === undefined) throw err;
      options.out(
        `bty: ${err.message}; trying again in ${Math.round(delay / 1000)} s ` +
          `(attempt ${attempt + 2} of ${delays.length + 1})\n`,
      );
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

function handOver(
  api: ServerApi,
  options: AgentOptions,
  catalog: string,
  banner: string | null,
): Promise<ExitCode> {
  const wizard = options.wizard ?? runWizardFallback;
  return wizard({
    catalog,
    banner,
    out: options.out,
    noReboot: options.reboot === null,
    // The wizard's flash outcome goes to the server like an auto-flash's.
    server: {
      api,
      ...(options.statusRetryDelayMs !== undefined
        ? { retryDelayMs: options.statusRetryDelayMs }
        : {}),
    },
  });
}

function currentDisks(options: AgentOptions): Promise<Disk[]> {
  return agentDisks({
    loopIdentity: options.loopIdentity,
    ...(options.listDisks ? { list: options.listDisks } : {}),
  });
}

/** Posts the disks (and lshw when it can be had); true when the server stored them. */
async function postInventory(api: ServerApi, options: AgentOptions): Promise<boolean> {
  const say = (line: string) => options.out(`${line}\n`);
  let disks: Disk[];
  try {
    disks = await currentDisks(options);
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
  emitMarker(MARKER_AUTO_FLASH_STARTING, options.out, sinks(options));
  const serial = plan.target_disk_serial;
  say(`bty: plan: flash ${plan.name ?? plan.image} onto the disk with serial '${serial}'`);
  say(`bty:   image ${plan.image}`);

  let disks: Disk[];
  try {
    disks = await currentDisks(options);
  } catch (err) {
    const e = asBtyError(err);
    return reportFailure(api, options, e, `disk inventory failed: ${e.message}`);
  }
  const matches = disksWithSerial(disks, serial);
  if (matches.length !== 1) {
    const current = describeDisks(disks);
    const refusal =
      matches.length === 0
        ? new BtyError(
            'BTY_ERR_TARGET_NOT_FOUND',
            `target disk serial '${serial}' not present on this host; current disks: ${current}`,
            { hint: 'Pick one of the current disks for this machine in bty-web.' },
          )
        : // Two disks claiming one serial (cloned USB bridges, a firmware default): guessing
          // could overwrite the wrong one, so neither is written.
          new BtyError(
            'BTY_ERR_TARGET_NOT_FOUND',
            `target disk serial '${serial}' matches ${matches.length} disks on this host: ` +
              `${describeDisks(matches)}; refusing to guess which one`,
            { hint: 'Disconnect the disks that share the serial, or flash by hand with bty.' },
          );
    options.err(
      matches.length === 0
        ? `bty: no disk on this host has serial '${serial}'. Current disks: ${current}\n` +
            'bty: the server-side pick is stale or wrong: fix the target disk of this machine ' +
            'in bty-web (/ui/machines). Nothing was written.\n'
        : `bty: ${refusal.message}\nbty: Nothing was written.\n`,
    );
    // Refused for safety: the server named a disk this machine does not have exactly once.
    return reportFailure(api, options, refusal, refusal.message, EXIT.refused);
  }
  const disk = matches[0]!;
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
  // Set by the write-time check below: its refusal replaces the engine's "declined" error.
  let identityRefusal: BtyError | null = null;
  options.onBusy?.('flashing');
  try {
    try {
      const result = await flash({
        source: plan.image,
        target: disk.path,
        // A hint, as a catalog's format is: the image name's extension wins, and a format this
        // agent does not know (a newer server) falls back to the name instead of failing.
        formatHint: plan.format,
        sha256: plan.disk_image_sha,
        ...(options.signal ? { signal: options.signal } : {}),
        // Right before writing (after the image was probed, which may take a while): the disk
        // at this path must still be the one the serial picked, not a device renumbered since.
        confirm: async (flashPlan) => {
          identityRefusal = await checkTargetIdentity(options, disk, flashPlan);
          return identityRefusal === null;
        },
        onProgress: (event: FlashProgress) => {
          reporter.report(event);
          view.update(event);
        },
      });
      view.end();
      say(
        `bty: flashed ${formatBytes(result.image_bytes)} onto ${disk.path} in ` +
          `${result.seconds.toFixed(1)} s; sha256 ` +
          (result.sha256_verified
            ? `verified (${result.sha256})`
            : 'not checked (no digest given)'),
      );
    } catch (err) {
      view.end();
      await reporter.flush();
      options.onBusy?.('reporting');
      const refusal = identityRefusal as BtyError | null;
      if (refusal !== null) {
        options.err(`bty: ${refusal.message}\nbty: Nothing was written.\n`);
        return await reportFailure(api, options, refusal, refusal.message, EXIT.refused);
      }
      const e = asBtyError(err);
      options.err(`bty: error: ${e.message} [${e.code}]\nbty: hint: ${e.hint}\n`);
      return await reportFailure(api, options, e, e.message);
    }
    options.onBusy?.('reporting');
    // The status clears the server's progress record: no progress report may land after it.
    await reporter.flush();
    if (!(await postStatus(api, options, 'done'))) {
      say('bty: the server was not told the flash completed; it may offer to flash again');
    }
  } finally {
    options.onBusy?.(null);
  }
  // A signal that arrived while `done` was being posted: the disk is written and the server
  // knows; stop here instead of rebooting.
  if (options.signal?.aborted) {
    say('bty: interrupted after the flash completed; not rebooting');
    return EXIT.cancelled;
  }
  emitMarker(MARKER_FLASH_COMPLETE, options.out, sinks(options));
  return rebootAndExit(options);
}

/**
 * The write-time identity check: null when the disk at the matched path still carries the
 * plan's serial and the size it had when it was matched; else the refusal.
 */
async function checkTargetIdentity(
  options: AgentOptions,
  matched: Disk,
  flashPlan: FlashPlan,
): Promise<BtyError | null> {
  const serial = matched.serial?.trim() ?? '';
  let now: Disk | undefined;
  try {
    now = (await currentDisks(options)).find((d) => d.path === matched.path);
  } catch (err) {
    return new BtyError(
      'BTY_ERR_TARGET_NOT_FOUND',
      `could not re-check ${matched.path} before writing: ${asBtyError(err).message}`,
    );
  }
  const why =
    now === undefined
      ? `${matched.path} is gone`
      : (now.serial?.trim() ?? '') !== serial
        ? `${matched.path} now has serial '${now.serial ?? ''}'`
        : now.size_bytes !== matched.size_bytes
          ? `${matched.path} is now ${now.size_bytes} bytes, not ${matched.size_bytes}`
          : flashPlan.target.path !== matched.path
            ? `the engine resolved the target to ${flashPlan.target.path}`
            : null;
  if (why === null) return null;
  return new BtyError(
    'BTY_ERR_TARGET_NOT_FOUND',
    `target disk serial '${serial}' changed before writing: ${why}; nothing was written`,
    { hint: 'The disks changed while the image was being prepared; boot the machine again.' },
  );
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

function postStatus(
  api: ServerApi,
  options: AgentOptions,
  status: 'done' | 'failed',
  reason?: string,
): Promise<boolean> {
  return sendStatus(api, status, reason, {
    out: options.out,
    ...(options.statusRetryDelayMs !== undefined
      ? { retryDelayMs: options.statusRetryDelayMs }
      : {}),
  });
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
