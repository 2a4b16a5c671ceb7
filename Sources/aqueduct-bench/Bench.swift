import ArgumentParser
import Histogram
@main struct Bench: AsyncParsableCommand { func run() async throws {} }
