/**
 * The benchmarks' common entry: parse the options (a bad one exits 2 with the usage, `--help`
 * prints it), run, and turn an unexpected error into exit 1 with its message.
 */
export async function runBench<Options>(
  usage: string,
  parseOptions: (argv: string[]) => Options | null,
  benchmark: (options: Options) => Promise<number>,
): Promise<number> {
  let options: Options | null;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n${usage}\n`);
    return 2;
  }
  if (options === null) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  try {
    return await benchmark(options);
  } catch (err) {
    process.stderr.write(`bench: error: ${(err as Error).message}\n`);
    return 1;
  }
}
