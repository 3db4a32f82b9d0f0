/** Public API of the flash engine (package entry point `bty-lab/flash`). */
export { flash, type FlashRequest, type FlashResult } from './engine.ts';
export {
  prepareFlash,
  assertPlanAllowed,
  type FlashPlan,
  type PlanRequest,
  type PreparedFlash,
  type Refusal,
} from './plan.ts';
export {
  inspectImage,
  resolveFormat,
  virtualSize,
  normaliseSha256,
  type ImageInspection,
} from './inspect.ts';
export {
  openImageSource,
  registerSourceScheme,
  FileSource,
  HttpSource,
  type ImageSource,
  type HttpSourceOptions,
  type SourceOpener,
} from './sources/index.ts';
export { probeTarget, type TargetInfo } from './target.ts';
export { SparseSink, type ZeroStrategy, type SinkResult } from './sinks/sparse-sink.ts';
export { verifyWritten } from './verify.ts';
