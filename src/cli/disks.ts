/** `bty disks`: the disks bty may write to, and with `--all` the others with their reasons. */
import { EXIT } from '../core/errors.ts';
import { listDisks, type Disk } from '../flash/disks.ts';
import { action, type Register } from './command.ts';
import { formatBytes, printJson, renderTable, type CliIO } from './output.ts';

interface DisksOptions {
  json?: boolean;
  all?: boolean;
}

export const registerDisks: Register = (program, io, setExit) => {
  program
    .command('disks')
    .description('list the disks bty can write to (--all: every device, with why it is refused)')
    .option('--json', 'print a JSON array of disk records')
    .option('--all', 'also show loop devices and disks bty refuses, with the reasons')
    .action(
      action(
        io,
        setExit,
        ([options]: [DisksOptions]) => options.json === true,
        async (options: DisksOptions) => {
          const disks = await listDisks({ all: options.all === true });
          if (options.json) printJson(io, disks);
          else printDiskTable(io, disks, options.all === true);
          return EXIT.ok;
        },
      ),
    );
};

function printDiskTable(io: CliIO, disks: Disk[], all: boolean): void {
  if (disks.length > 0) {
    io.out(
      renderTable(
        ['PATH', 'SIZE', 'MODEL', 'SERIAL', 'TRAN', 'RO', 'RM', 'ELIGIBLE/REASON'],
        disks.map((d) => [
          d.path,
          formatBytes(d.size_bytes),
          d.model,
          d.serial,
          d.tran,
          d.readonly ? 'yes' : 'no',
          d.removable ? 'yes' : 'no',
          d.eligible
            ? 'yes'
            : `no: ${d.reasons.map((r) => withoutPath(r.message, d.path)).join('; ')}`,
        ]),
      ),
    );
  }
  if (!disks.some((d) => d.eligible)) {
    io.out(
      all
        ? 'No disk bty can write to was found (see the reasons above).\n'
        : 'No disk bty can write to was found. Run `bty disks --all` to see every device and why it is refused.\n',
    );
  }
}

/** The path is already in the first column; `/dev/sdb is read-only` reads `is read-only`. */
function withoutPath(message: string, path: string): string {
  return message.startsWith(`${path} `) ? message.slice(path.length + 1) : message;
}
