import ArgumentParser
@main struct Aqueduct: AsyncParsableCommand { func run() async throws {} }
