/** `bty flash SOURCE TARGET`: write an image to a disk or a file, with a plan, progress and checks. */
import { createInterface } from 'node:readline/promises';
import { BtyError, EXIT } from '../core/errors.ts';
import type { FlashProgress } from '../core/progress.ts';
import { flash, removeTemporaryFilesSync, type FlashResult } from '../flash/engine.ts';
import type { FlashPlan } from '../flash/plan.ts';
import { action, formatOption, type Register } from './command.ts';
import { formatBytes, printJsonLine, type CliIO } from './output.ts';
import { ProgressView } from './progress-view.ts';

interface FlashOptions {
  yes?: boolean;
  sha256?: string;
  format?: string;
  verify?: boolean;
  dryRun?: boolean;
  json?: boolean;
  platform?: string;
}

export function describePlan(plan: FlashPlan): string {
  const img = plan.image;
  const t = plan.target;
  const sizes = [
    img.size_bytes !== null
      ? `${formatBytes(img.size_bytes)} ${img.format === 'img' ? '' : 'compressed'}`.trim()
      : null,
    img.virtual_size_bytes !== null
      ? `${formatBytes(img.virtual_size_bytes)} on disk`
      : 'size on disk unknown',
  ].filter(Boolean);
  const device = [t.model, t.serial ? `serial ${t.serial}` : null, t.transport]
    .filter(Boolean)
    .join(', ');
  const lines: Array<[string, string]> = [
    ['image', img.source],
    [
      'format',
      `${img.format} (from the ${img.format_from === 'option' ? '--format option' : img.format_from}; content: ${img.content})`,
    ],
    ['size', sizes.join(', ')],
    [
      'sha256',
      img.sha256
        ? `${img.sha256} (from ${img.sha256_from === 'sidecar' ? 'the .sha256 sidecar' : '--sha256'})`
        : 'none given: the bytes will not be checked against a digest',
    ],
    [
      'target',
      t.kind === 'block'
        ? `${t.path}  ${formatBytes(t.size_bytes)}${device ? `  (${device})` : ''}`
        : `${t.path}  (regular file${t.kind === 'missing' ? ', will be created' : ', will be replaced'})`,
    ],
    ['verify', plan.verify ? 'yes: read back after writing' : 'no (add --verify to read back)'],
  ];
  const out = lines.map(([k, v]) => `  ${k.padEnd(7)} ${v}`);
  for (const n of plan.notes) out.push(`  note    ${n}`);
  return out.join('\n') + '\n';
}

function describeResult(r: FlashResult): string {
  const lines = [
    `bty: flashed ${r.plan.image.source} -> ${r.plan.target.path}`,
    `  ${formatBytes(r.image_bytes)} image: ${formatBytes(r.bytes_written)} written, ` +
      `${formatBytes(r.bytes_skipped)} of zeros skipped, in ${r.seconds.toFixed(1)} s` +
      (r.resumes ? `, download resumed ${r.resumes}x` : ''),
    `  sha256: ${r.sha256_verified ? `verified (${r.sha256})` : 'not checked (no digest given)'}`,
    `  read-back: ${r.verified ? 'verified' : 'not done'}`,
  ];
  for (const n of r.notes) lines.push(`  note: ${n}`);
  return lines.join('\n') + '\n';
}

async function askConfirmation(
  io: CliIO,
  plan: FlashPlan,
  controller: AbortController,
): Promise<boolean> {
  io.err(`bty: flash plan\n${describePlan(plan)}`);
  const what = plan.target.kind === 'block' ? `ALL DATA on ${plan.target.path}` : plan.target.path;
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  // readline takes Ctrl-C for itself while it owns the terminal: treat it as a cancel.
  rl.on('SIGINT', () => controller.abort());
  try {
    const answer = await rl.question(`bty: this overwrites ${what}. Continue? [y/N] `, {
      signal: controller.signal,
    });
    return /^(y|yes)$/i.test(answer.trim());
  } catch (err) {
    if (controller.signal.aborted) return false;
    throw err;
  } finally {
    rl.close();
  }
}

export const registerFlash: Register = (program, io, setExit) => {
  program
    .command('flash')
    .description(
      'write an image (path, file://, http(s):// URL, oras:// reference) to a disk or a file',
    )
    .argument('<source>', 'image: local path, file://, http(s):// URL or oras:// reference')
    .argument('<target>', 'whole-disk block device (see `bty disks`) or a regular file')
    .option('-y, --yes', 'do not ask for confirmation (required without a terminal)')
    .option('--sha256 <hex>', 'expected sha256 of the source bytes (checked on the wire)')
    .addOption(formatOption())
    .option('--verify', 'read back what was written and compare')
    .option('--platform <os/arch>', 'for a multi-platform oras:// index (default: this machine)')
    .option('--dry-run', 'resolve and validate everything, write nothing')
    .option('--json', 'JSON lines: progress events, then a result (or error) object')
    .action(
      action(
        io,
        setExit,
        (args) => Boolean((args[2] as FlashOptions | undefined)?.json),
        async (source: string, target: string, opts: FlashOptions) => {
          const json = Boolean(opts.json);
          const controller = new AbortController();
          const view = json ? null : new ProgressView(io.err, io.isTTY);
          let interrupted = 0;
          const onSigint = () => {
            interrupted++;
            if (interrupted === 1) {
              view?.end();
              io.err('bty: cancelling: stopping the download and the writers...\n');
              controller.abort();
            } else {
              // A second Ctrl-C: leave now, but not without removing partial files.
              removeTemporaryFilesSync();
              process.exit(EXIT.cancelled);
            }
          };
          process.on('SIGINT', onSigint);
          process.on('SIGTERM', onSigint);
          const interactive = Boolean(process.stdin.isTTY && process.stderr.isTTY);
          try {
            const result = await flash({
              source,
              target,
              format: opts.format ?? null,
              sha256: opts.sha256 ?? null,
              platform: opts.platform ?? null,
              verify: Boolean(opts.verify),
              dryRun: Boolean(opts.dryRun),
              signal: controller.signal,
              onProgress: (p: FlashProgress) => {
                if (json) printJsonLine(io, { type: 'progress', ...p });
                else view?.update(p);
              },
              ...(opts.yes || opts.dryRun
                ? {}
                : {
                    confirm: async (plan: FlashPlan) => {
                      view?.end();
                      if (!interactive) {
                        if (!json) io.err(`bty: flash plan\n${describePlan(plan)}`);
                        throw new BtyError(
                          'BTY_ERR_NOT_CONFIRMED',
                          'no terminal to confirm on and --yes not given; nothing was written',
                        );
                      }
                      return askConfirmation(io, plan, controller);
                    },
                  }),
            });
            view?.end();
            if (json) printJsonLine(io, { type: 'result', ...result });
            else if (result.dry_run) {
              io.out(`bty: dry run: nothing was written\n${describePlan(result.plan)}`);
            } else io.out(describeResult(result));
            return EXIT.ok;
          } finally {
            view?.end();
            process.off('SIGINT', onSigint);
            process.off('SIGTERM', onSigint);
          }
        },
      ),
    );
};
